"""Backups live in the storage backend, not on the disk of the process that made
them: one process (a replica, with its own data directory) makes a backup, another
(another data directory, as on another node) lists it and restores it. No Ray is
needed: the backup service is called directly, on a database of this test's own."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import psycopg

from troupe.infra.devstack import admin_exec, with_database

ROOT = Path(__file__).resolve().parent.parent
SERVER = os.environ.get("TROUPE_MULTINODE_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")

SCRIPT = """
import asyncio, json, sys

async def main(action, backup_id=None):
    from sqlalchemy import select
    from troupe.db import models
    from troupe.db.session import dispose_engine, session_scope
    from troupe.platform.deps import Principal
    from troupe.platform.system import backup, schemas

    try:
        async with session_scope() as session:
            user = (await session.execute(select(models.User))).scalars().first()
        principal = Principal(id=user.id, email=user.email, username=user.username, role=user.role,
                              permissions=frozenset(), jti="cli", exp=0)
        if action == "create":
            async with session_scope() as session:
                made = await backup.create_backup(session=session, user=principal,
                                                  body=schemas.BackupCreate(compression=True, encryption=True))
            print(json.dumps({"id": made.id}))
        else:
            listed = [b.id for b in await backup.list_backups()]
            done = await backup.restore_backup(user=principal, body=schemas.RestoreRequest(backupId=backup_id))
            print(json.dumps({"listed": listed, "restored": done.backup_id}))
    finally:
        await dispose_engine()

asyncio.run(main(*sys.argv[1:]))
"""


def _server() -> str:
    try:
        psycopg.connect(SERVER, connect_timeout=2).close()
        return SERVER
    except psycopg.Error:
        from troupe.infra import embedded

        return embedded.start_postgres(ROOT / ".troupe" / "test")


def _redis() -> str:
    import redis

    url = os.environ.get("TROUPE_MULTINODE_REDIS", "redis://127.0.0.1:6379/0")
    try:
        redis.Redis.from_url(url, socket_connect_timeout=2).ping()
        return url
    except redis.RedisError:
        from troupe.infra import embedded

        return embedded.start_redis(ROOT / ".troupe" / "test")


def _run(env: dict[str, str], *args: str, stdin: str | None = None) -> str:
    result = subprocess.run([sys.executable, *args], env=env, cwd=ROOT, capture_output=True, text=True,
                            timeout=180, input=stdin)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_a_backup_made_by_one_process_is_listed_and_restored_by_another(tmp_path: Path):
    server = _server()
    db_name = f"troupe_backup_{uuid.uuid4().hex[:8]}"
    admin_exec(server, f'CREATE DATABASE "{db_name}"')
    database_url = with_database(server, db_name)
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("TROUPE_", "DATABASE_", "REDIS_", "JWT_", "STORAGE_", "RAY_"))}
    shared = {**base, "DATABASE_URL": database_url, "REDIS_URL": _redis(), "TROUPE_ENV": "test",
              "TROUPE_REDIS_PREFIX": f"troupe-backup-{db_name}", "JWT_SECRET": "j" * 48,
              "TROUPE_SECRETS_KEY": base64.urlsafe_b64encode(os.urandom(32)).decode(),
              "STORAGE_ROOT": str(tmp_path / "shared-storage")}
    one = {**shared, "TROUPE_DATA_DIR": str(tmp_path / "replica-one")}
    two = {**shared, "TROUPE_DATA_DIR": str(tmp_path / "replica-two")}
    try:
        _run(one, "-m", "troupe", "create-admin", "--email", "ops@example.com", "--password-stdin",
             stdin="Backup-St0rage!Pass\n")
        made = json.loads(_run(one, "-c", SCRIPT, "create").strip().splitlines()[-1])
        # Nothing of the backup on the maker's own disk; dump and manifest in storage.
        assert not list((tmp_path / "replica-one").rglob("backup-*"))
        stored = sorted(p.name for p in (tmp_path / "shared-storage" / "backups").iterdir())
        assert stored == [f"{made['id']}.json", f"{made['id']}.sql.gz.enc"]

        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute("UPDATE users SET first_name = 'Changed'")
        other = json.loads(_run(two, "-c", SCRIPT, "restore", made["id"]).strip().splitlines()[-1])
        assert other == {"listed": [made["id"]], "restored": made["id"]}
        with psycopg.connect(database_url) as conn:
            assert conn.execute("SELECT first_name FROM users").fetchall() == [("Admin",)]
    finally:
        admin_exec(server, f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')
