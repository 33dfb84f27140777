"""Logical database backups with PostgreSQL's own tools.

A backup is a data-only ``pg_dump`` (plain SQL, every table except
``alembic_version``) plus a JSON manifest recording the schema's migration heads.
Restore runs, in ONE transaction through ``psql``: TRUNCATE every table, then
the dump. Either all data is replaced or nothing changes. The schema itself is
owned by the migrations, so a backup restores only into a database at the same
migration heads.

Dumps and manifests live in the storage backend (``troupe.infra.storage``,
under ``backups/``), shared by every replica and node: a backup made through
one replica is listed and restored through any other. Only the transient
pg_dump/psql files touch the local disk (a scratch directory, removed after).

The binaries are the embedded pgserver's (``pginstall/bin``), else the
system's (PATH); pg_dump must not be older than the server it dumps."""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import secrets
import shutil
import tempfile
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from troupe.config import get_settings
from troupe.db import models
from troupe.db.session import session_scope
from troupe.errors import AppError, ErrorCode, invalid, not_found
from troupe.infra.storage import get_storage
from troupe.platform.auth.audit import audit
from troupe.platform.deps import Principal
from troupe.platform.system import schemas
from troupe.timeutil import iso, parse_iso, utcnow

_ENC_MAGIC = b"TRPBK1"  # file header of an encrypted backup: magic || nonce(12) || ciphertext+tag
_RESTORE_LOCK_TIMEOUT = "30s"


BACKUPS = "backups"  # the storage prefix of dumps and manifests


def _binary(name: str) -> str:
    try:
        import pgserver

        embedded = Path(pgserver.__file__).parent / "pginstall" / "bin" / name
        if embedded.exists():
            return str(embedded)
    except ImportError:
        pass
    found = shutil.which(name)
    if found is None:
        raise AppError(ErrorCode.SERVICE_UNAVAILABLE, f"{name} is not installed on this server")
    return found


def _libpq_target(database_url: str | None = None) -> tuple[str, dict[str, str]]:
    """The database URL for pg_dump/psql without its password, and the environment that
    carries it (PGPASSWORD): a command line is readable by every user of the host (ps)."""
    parts = urlsplit(database_url or get_settings().database_url or "")
    env: dict[str, str] = {}
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        user, has_password, password = userinfo.partition(":")
        if has_password:
            env["PGPASSWORD"] = unquote(password)
        netloc = f"{user}@{host}"
    query = parts.query
    pairs = parse_qsl(query, keep_blank_values=True)
    if any(key == "password" for key, _ in pairs):
        env["PGPASSWORD"] = next(value for key, value in pairs if key == "password")
        query = urlencode([(key, value) for key, value in pairs if key != "password"])
    return urlunsplit((parts.scheme.split("+")[0], netloc, parts.path, query, parts.fragment)), env


async def _run(*args: str, env_extra: dict[str, str] | None = None) -> None:
    proc = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env_extra or {})})
    _, stderr = await proc.communicate()
    if proc.returncode != 0:
        message = stderr.decode(errors="replace").strip().splitlines()
        raise AppError(ErrorCode.DATABASE_ERROR, f"{Path(args[0]).name} failed",
                       details={"stderr": message[-5:]})


async def _heads(session: AsyncSession) -> list[str]:
    return sorted((await session.execute(text("SELECT version_num FROM alembic_version"))).scalars())


async def _tables(session: AsyncSession) -> list[str]:
    return list((await session.execute(text(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'alembic_version' "
        "ORDER BY tablename"))).scalars())


def _seal_file(path: Path, key: bytes) -> None:
    nonce = os.urandom(12)
    data = AESGCM(key).encrypt(nonce, path.read_bytes(), b"troupe-backup")
    path.write_bytes(_ENC_MAGIC + nonce + data)


def _plain_sql(path: Path, out: Path, key: bytes) -> None:
    """Decrypt and/or decompress a stored backup into a plain SQL file."""
    data = path.read_bytes()
    if data.startswith(_ENC_MAGIC):
        body = data[len(_ENC_MAGIC):]
        data = AESGCM(key).decrypt(body[:12], body[12:], b"troupe-backup")
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    out.write_bytes(data)


def _manifest_key(backup_id: str) -> str:
    return f"{BACKUPS}/{backup_id}.json"


async def _read_manifest(backup_id: str) -> dict:
    try:
        return json.loads(await get_storage().read_bytes(_manifest_key(backup_id)))
    except FileNotFoundError:
        raise not_found("Backup") from None


def _to_out(manifest: dict) -> schemas.BackupOut:
    return schemas.BackupOut(id=manifest["id"], size=manifest["size"],
                             created_at=parse_iso(manifest["createdAt"]),
                             compression=manifest["compression"], encryption=manifest["encryption"],
                             created_by=manifest.get("createdBy"), schema_heads=manifest["schemaHeads"],
                             tables=len(manifest["tables"]))


async def create_backup(*, session: AsyncSession, user: Principal,
                        body: schemas.BackupCreate) -> schemas.BackupOut:
    if not body.include_data:
        raise invalid("A backup always contains the database's data", field="includeData")
    if body.include_files:
        raise invalid("Uploaded files are not included in backups; back up the storage backend itself",
                      field="includeFiles")
    heads, tables = await _heads(session), await _tables(session)
    created = utcnow()
    backup_id = f"backup-{created:%Y%m%dT%H%M%S}-{secrets.token_hex(4)}"
    name = f"{backup_id}.sql{'.gz' if body.compression else ''}{'.enc' if body.encryption else ''}"
    with tempfile.TemporaryDirectory(prefix="troupe-backup-") as scratch:
        dump = Path(scratch) / name
        args = [_binary("pg_dump"), "--data-only", "--no-owner", "--no-privileges", "--format=plain",
                "--exclude-table=public.alembic_version", f"--file={dump}"]
        if body.compression:
            args.append("--compress=6")
        url, env = _libpq_target()
        await _run(*args, f"--dbname={url}", env_extra=env)
        if body.encryption:
            await asyncio.to_thread(_seal_file, dump, get_settings().resolved_secrets_key())
        size = (await asyncio.to_thread(dump.stat)).st_size
        await get_storage().put_file(dump, f"{BACKUPS}/{name}")
    manifest = {"id": backup_id, "file": name, "size": size,
                "createdAt": iso(created, timespec="microseconds"), "compression": body.compression,
                "encryption": body.encryption, "createdBy": str(user.id), "schemaHeads": heads,
                "tables": tables}
    # The manifest is written last: a listed backup always has its complete dump.
    await get_storage().write_bytes(_manifest_key(backup_id), json.dumps(manifest).encode())
    await audit(session, action="system.backup", message=f"Backup {backup_id} created", user_id=user.id,
                backupId=backup_id, size=manifest["size"])
    return _to_out(manifest)


async def list_backups() -> list[schemas.BackupOut]:
    storage = get_storage()
    names = [name for name, _ in await storage.listdir(BACKUPS)
             if name.startswith("backup-") and name.endswith(".json")]
    manifests = [json.loads(data) for data in await asyncio.gather(
        *(storage.read_bytes(f"{BACKUPS}/{name}") for name in names))]
    return [_to_out(m) for m in sorted(manifests, key=lambda m: m["createdAt"], reverse=True)]


async def restore_backup(*, user: Principal, body: schemas.RestoreRequest) -> schemas.RestoreResult:
    """Replace ALL data with the backup's. The caller must hold no open transaction
    (its locks would block the TRUNCATE)."""
    if not body.restore_data:
        raise invalid("A restore always replaces the database's data", field="restoreData")
    if body.restore_files:
        raise invalid("Uploaded files are not included in backups", field="restoreFiles")
    manifest = await _read_manifest(body.backup_id)
    async with session_scope() as session:
        running = (await session.execute(select(models.Task.id).where(
            models.Task.status == "running").limit(1))).first()
        if running is not None:
            raise AppError(ErrorCode.RESOURCE_IN_USE, "Tasks are running; stop them before restoring")
        heads, tables = await _heads(session), await _tables(session)
    if heads != manifest["schemaHeads"]:
        raise AppError(ErrorCode.RESOURCE_IN_USE, "The backup was taken at another schema version",
                       details={"backup": manifest["schemaHeads"], "database": heads}, status=409)
    with tempfile.TemporaryDirectory(prefix="troupe-restore-") as tmp:
        source, sql = Path(tmp) / manifest["file"], Path(tmp) / "restore.sql"
        try:
            await get_storage().get_file(f"{BACKUPS}/{manifest['file']}", source)
        except FileNotFoundError:
            raise AppError(ErrorCode.STORAGE_ERROR, "The backup's dump is missing from storage") from None
        try:
            await asyncio.to_thread(_plain_sql, source, sql, get_settings().resolved_secrets_key())
        except Exception as exc:  # unreadable, corrupt, or sealed with another key
            raise AppError(ErrorCode.STORAGE_ERROR, "The backup file cannot be read") from exc
        truncate = "TRUNCATE " + ", ".join(f'public."{t}"' for t in tables) + " RESTART IDENTITY CASCADE"
        url, env = _libpq_target()
        await _run(_binary("psql"), "--no-psqlrc", "--quiet", "--single-transaction",
                   "--set=ON_ERROR_STOP=1", f"--command=SET lock_timeout = '{_RESTORE_LOCK_TIMEOUT}'",
                   f"--command={truncate}", f"--file={sql}", f"--dbname={url}", env_extra=env)
    restored = utcnow()
    async with session_scope() as session:
        # The actor may not exist in the restored data: record it without the foreign key.
        exists = await session.get(models.User, user.id)
        await audit(session, action="system.restore", message=f"Backup {body.backup_id} restored",
                    user_id=user.id if exists else None, actor_id=user.id, backupId=body.backup_id, actorEmail=user.email)
    return schemas.RestoreResult(backup_id=body.backup_id, restored_at=restored, tables=len(tables))
