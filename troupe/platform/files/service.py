"""Files: metadata in Postgres, bytes in fsspec storage.

Access policy (README "Files"): a file is readable by its uploader, by platform
admins, and by the owner, members and viewers of its company. A file of no company
that is not private is also readable by the uploader's teammates (everyone who
shares a company with them). Nothing is readable across tenants: anything else
answers RES_001 so ids of other tenants do not leak. Uploads are not private
unless ``private=true`` is sent (the spec's default), which the tenant scope keeps
safe. Only the uploader changes or shares a file; the uploader or a platform
admin deletes it.

Storage keys come from the file id (``objects/<2 hex>/<uuid hex>``), never
from the user's filename; chunked uploads live under
``uploads/<user id>/<upload id>/`` until they are assembled.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from datetime import datetime, timedelta
from typing import Any

from fastapi import Request
from pydantic import TypeAdapter, ValidationError
from sqlalchemy import Select, and_, delete, func, or_, select, true, update
from sqlalchemy.ext.asyncio import AsyncSession

from troupe import runtime_settings
from troupe.db import models
from troupe.errors import AppError, ErrorCode, forbidden, invalid, not_found
from troupe.infra.ratelimit import hit
from troupe.infra.redis import get_redis, rkey
from troupe.infra.storage import get_storage
from troupe.platform.access import load_company, member_company_ids_subquery, visible_companies
from troupe.platform.deps import Principal
from troupe.platform.files.formstream import receive_form, too_large
from troupe.platform.files.schemas import (
    BatchDelete,
    BatchItem,
    BatchResult,
    ChunkReceived,
    CompleteUpload,
    FileCategory,
    FileInfo,
    FileListParams,
    FileUpdate,
    ItemError,
    ShareCreate,
    SharedFileInfo,
    ShareRead,
    StorageUsage,
)
from troupe.platform.files.sniff import ALLOWED_MIME, HEAD_BYTES, Sniffed, safe_name, sniff
from troupe.platform.schemas import Pagination
from troupe.security import hash_password, new_opaque_token, verify_password
from troupe.timeutil import as_utc, iso, parse_iso, utcnow

F = models.File
_CATEGORY: TypeAdapter[str] = TypeAdapter(FileCategory)
CHUNK_UPLOAD_TTL = timedelta(hours=24)
MAX_CHUNKS = 10_000
MAX_METADATA_BYTES = 16 * 1024
SHARE_PASSWORD_ATTEMPTS_PER_MINUTE = 20
_UPLOAD_ID = re.compile(r"^[A-Za-z0-9_-]{8,64}$")
_UPLOAD_FIELDS = {"file", "type", "metadata", "companyId", "private", "tags"}
_CHUNK_FIELDS = {"chunk", "chunkIndex", "totalChunks", "fileId", "uploadId", "filename"}
_SORT = {"createdAt": F.created_at, "filename": F.filename, "size": F.size, "type": F.type}


def object_key(file_id: uuid.UUID) -> str:
    return f"objects/{file_id.hex[:2]}/{file_id.hex}"


def _upload_dir(user: Principal, upload_id: str) -> str:
    return f"uploads/{user.id.hex}/{upload_id}"


def _download_url(base: str, file_id: uuid.UUID) -> str:
    return f"{base}/api/files/{file_id}/download"


def _parse_id(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(str(value))
    except ValueError as exc:
        raise not_found("File") from exc


def _visible(user: Principal):
    if user.is_global:
        return true()
    company = models.Company
    # The uploader shares a company with the caller (either may own it or belong to it).
    teammate = select(company.id).where(
        visible_companies(user),
        or_(company.owner_id == F.uploaded_by, company.team_members.any(F.uploaded_by))).exists()
    return or_(F.uploaded_by == user.id, F.company_id.in_(member_company_ids_subquery(user)),
               and_(F.company_id.is_(None), F.private.is_not(True), teammate))


async def _load_visible(session: AsyncSession, user: Principal, file_id: str, *,
                        for_update: bool = False) -> models.File:
    stmt = select(F).where(F.id == _parse_id(file_id), _visible(user))
    if for_update:
        stmt = stmt.with_for_update()
    file = (await session.execute(stmt)).scalar_one_or_none()
    if file is None:
        raise not_found("File")
    return file


def _refuse_type(found: Sniffed) -> AppError:
    return AppError(ErrorCode.INVALID_FILE_TYPE, f"Files of type {found.mime} are not accepted",
                    details={"mimeType": found.mime, "allowed": sorted(ALLOWED_MIME)})


async def _upload_limit(session: AsyncSession, user: Principal) -> tuple[int, bool]:
    """The most bytes the caller may upload now, and whether the quota (not the
    per-file cap) is what limits it."""
    limits = (await runtime_settings.current()).limits  # default MAX_UPLOAD_BYTES / STORAGE_QUOTA_BYTES
    cap = limits.max_file_size
    if not limits.max_storage_per_user:
        return cap, False
    used = (await session.execute(select(func.coalesce(func.sum(F.size), 0))
                                  .where(F.uploaded_by == user.id))).scalar_one()
    remaining = max(limits.max_storage_per_user - int(used), 0)
    return (remaining, True) if remaining < cap else (cap, False)


# ---------------------------------------------------------------- form fields

def _one(fields: dict[str, list[str]], name: str) -> str | None:
    values = fields.get(name)
    if not values:
        return None
    if len(values) > 1:
        raise invalid(f"{name} was sent more than once", field=name)
    return values[0].strip()


def _bool(fields: dict[str, list[str]], name: str, default: bool) -> bool:
    raw = _one(fields, name)
    if raw is None or raw == "":
        return default
    if raw.lower() in ("true", "1", "yes", "on"):
        return True
    if raw.lower() in ("false", "0", "no", "off"):
        return False
    raise invalid(f"{name} must be true or false", field=name, code=ErrorCode.INVALID_FORMAT)


def _int(fields: dict[str, list[str]], name: str, *, lo: int, hi: int) -> int:
    raw = _one(fields, name)
    if raw is None or raw == "":
        raise AppError(ErrorCode.REQUIRED_FIELD_MISSING, f"{name} is required", field=name)
    if not re.fullmatch(r"\d{1,6}", raw):
        raise invalid(f"{name} must be a whole number", field=name, code=ErrorCode.INVALID_FORMAT)
    value = int(raw)
    if not lo <= value <= hi:
        raise invalid(f"{name} must be between {lo} and {hi}", field=name)
    return value


def _metadata(raw: Any, field: str = "metadata") -> dict[str, Any]:
    if raw is None or raw == "":
        return {}
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError as exc:
            raise invalid("metadata must be a JSON object", field=field, code=ErrorCode.INVALID_FORMAT) from exc
    if not isinstance(raw, dict):
        raise invalid("metadata must be a JSON object", field=field, code=ErrorCode.INVALID_FORMAT)
    if len(json.dumps(raw)) > MAX_METADATA_BYTES:
        raise invalid(f"metadata is larger than {MAX_METADATA_BYTES} bytes", field=field)
    return raw


def _tags(fields: dict[str, list[str]]) -> list[str]:
    """``tags`` as repeated fields, a comma-separated list or a JSON array."""
    out: list[str] = []
    for raw in fields.get("tags", []):
        raw = raw.strip()
        if raw.startswith("["):
            try:
                items = json.loads(raw)
            except ValueError as exc:
                raise invalid("tags must be a JSON array of strings", field="tags",
                              code=ErrorCode.INVALID_FORMAT) from exc
            if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
                raise invalid("tags must be a JSON array of strings", field="tags", code=ErrorCode.INVALID_FORMAT)
        else:
            items = raw.split(",")
        for item in items:
            tag = item.strip()
            if tag and tag not in out:
                if len(tag) > 50:
                    raise invalid("Tags are at most 50 characters", field="tags")
                out.append(tag)
    if len(out) > 20:
        raise invalid("At most 20 tags", field="tags")
    return out


def _unknown(fields: dict[str, list[str]], allowed: set[str]) -> None:
    extra = sorted(set(fields) - allowed)
    if extra:
        raise invalid(f"Unknown form fields: {', '.join(extra)}", field=extra[0],
                      details=[{"field": f, "message": "not a field of this form"} for f in extra])


async def _company_for_upload(session: AsyncSession, user: Principal, raw: Any) -> uuid.UUID | None:
    if raw is None or raw == "":
        return None
    company = await load_company(session, user, str(raw), "write")
    return company.id


def _category(raw: str | None) -> str | None:
    """The upload form's ``type`` (the client's category, e.g. avatar), checked as the list filter checks it."""
    if raw is None or raw == "":
        return None
    try:
        return _CATEGORY.validate_python(raw)
    except ValidationError as exc:
        raise invalid(f"type: {exc.errors()[0]['msg']}", field="type") from exc


def _new_row(*, file_id: uuid.UUID, user: Principal, name: str, found: Sniffed, size: int, base: str,
             company_id: uuid.UUID | None, private: bool, tags: list[str], meta: dict[str, Any],
             category: str | None) -> models.File:
    return F(id=file_id, filename=name, original_name=name, mime_type=found.mime, size=size,
             url=_download_url(base, file_id), type=category or found.type or "other",
             meta={**meta, **found.metadata},
             uploaded_by=user.id, company_id=company_id, private=private, tags=tags)


# ---------------------------------------------------------------- upload

async def upload(*, session: AsyncSession, user: Principal, request: Request, base: str) -> FileInfo:
    storage = get_storage()
    file_id = uuid.uuid4()
    key = object_key(file_id)
    limit, by_quota = await _upload_limit(session, user)
    found: list[Sniffed] = []

    def check(head: bytes, filename: str, _ctype: str | None) -> None:
        result = sniff(head, filename)
        if result.type is None:
            raise _refuse_type(result)
        found.append(result)

    fields, received = await receive_form(request, file_field="file", limit=limit, quota_limited=by_quota,
                                          on_head=check, open_writer=lambda: storage.open_writer(key))
    try:
        _unknown(fields, _UPLOAD_FIELDS)
        meta = _metadata(_one(fields, "metadata"))
        row = _new_row(file_id=file_id, user=user, name=safe_name(received.filename), found=found[0],
                       size=received.size, base=base,
                       company_id=await _company_for_upload(session, user, _one(fields, "companyId")),
                       private=_bool(fields, "private", False), tags=_tags(fields), meta=meta,
                       category=_category(_one(fields, "type")))
        session.add(row)
        # Committed here, not by the router, so a failed insert never leaves an orphan object.
        await session.commit()
    except BaseException:
        await session.rollback()
        await storage.delete(key)
        raise
    await session.refresh(row)
    return FileInfo.model_validate(row)


async def upload_chunk(*, session: AsyncSession, user: Principal, request: Request) -> ChunkReceived:
    storage = get_storage()
    max_file_size = (await runtime_settings.current()).limits.max_file_size
    staging = f"uploads/{user.id.hex}/staging/{uuid.uuid4().hex}"
    fields, received = await receive_form(request, file_field="chunk", limit=max_file_size,
                                          quota_limited=False, on_head=lambda *_: None,
                                          open_writer=lambda: storage.open_writer(staging))
    try:
        _unknown(fields, _CHUNK_FIELDS)
        upload_id = _one(fields, "fileId") or _one(fields, "uploadId") or uuid.uuid4().hex
        if not _UPLOAD_ID.match(upload_id):
            raise invalid("fileId must be 8-64 letters, digits, '-' or '_'", field="fileId")
        total = _int(fields, "totalChunks", lo=1, hi=MAX_CHUNKS)
        index = _int(fields, "chunkIndex", lo=0, hi=MAX_CHUNKS - 1)
        if index >= total:
            raise invalid("chunkIndex must be below totalChunks", field="chunkIndex")
        folder = _upload_dir(user, upload_id)
        manifest = await _read_manifest(folder)
        now = utcnow()
        if manifest is None:
            filename = _one(fields, "filename")
            if not filename:
                raise AppError(ErrorCode.REQUIRED_FIELD_MISSING, "filename is required", field="filename")
            manifest = {"filename": safe_name(filename), "totalChunks": total, "createdAt": iso(now, timespec="microseconds")}
            await storage.write_bytes(f"{folder}/manifest.json", json.dumps(manifest).encode())
        else:
            await _check_not_expired(folder, manifest)
            if manifest["totalChunks"] != total:
                raise invalid(f"This upload has {manifest['totalChunks']} chunks", field="totalChunks")
        part = f"{folder}/parts/{index:06d}"
        await storage.move(staging, part)
        parts = await storage.listdir(f"{folder}/parts")
        received_bytes = sum(size for _, size in parts)
        if received_bytes > max_file_size:
            await storage.delete(part)
            raise too_large(max_file_size)
    finally:
        await storage.delete(staging)
    created = _manifest_created(manifest)
    return ChunkReceived(file_id=upload_id, chunk_index=index, total_chunks=total, received_chunks=len(parts),
                         received_bytes=received_bytes, expires_at=created + CHUNK_UPLOAD_TTL)


async def _read_manifest(folder: str) -> dict[str, Any] | None:
    try:
        return json.loads(await get_storage().read_bytes(f"{folder}/manifest.json"))
    except FileNotFoundError:
        return None


def _manifest_created(manifest: dict[str, Any]) -> datetime:
    return parse_iso(manifest["createdAt"])  # older manifests: naive UTC


async def _check_not_expired(folder: str, manifest: dict[str, Any]) -> None:
    if utcnow() - _manifest_created(manifest) > CHUNK_UPLOAD_TTL:
        await get_storage().delete_prefix(folder)
        raise AppError(ErrorCode.RESOURCE_EXPIRED, "This upload has expired; start again")


async def complete_upload(*, session: AsyncSession, user: Principal, data: CompleteUpload,
                          base: str) -> FileInfo:
    storage = get_storage()
    if not _UPLOAD_ID.match(data.file_id):
        raise not_found("Upload")
    folder = _upload_dir(user, data.file_id)
    lock = rkey("files", "complete", user.id.hex, data.file_id)
    redis = get_redis()
    if not await redis.set(lock, "1", nx=True, ex=600):
        raise AppError(ErrorCode.RESOURCE_LOCKED, "This upload is already being completed")
    try:
        manifest = await _read_manifest(folder)
        if manifest is None:
            raise not_found("Upload")
        await _check_not_expired(folder, manifest)
        if manifest["totalChunks"] != data.total_chunks:
            raise invalid(f"This upload has {manifest['totalChunks']} chunks", field="totalChunks")
        parts = dict(await storage.listdir(f"{folder}/parts"))
        names = [f"{i:06d}" for i in range(data.total_chunks)]
        missing = [i for i, name in enumerate(names) if name not in parts]
        if missing:
            raise invalid(f"{len(missing)} chunk(s) missing", field="totalChunks",
                          details={"missingChunks": missing[:100], "received": len(parts)})
        size = sum(parts[name] for name in names)
        limit, by_quota = await _upload_limit(session, user)
        if size > limit:
            raise too_large(limit, quota=by_quota)
        head = b""
        for name in names:
            if len(head) >= HEAD_BYTES:
                break
            head += await storage.read_head(f"{folder}/parts/{name}", HEAD_BYTES - len(head))
        found = sniff(head, manifest["filename"])
        if found.type is None:
            await storage.delete_prefix(folder)
            raise _refuse_type(found)
        company_id = await _company_for_upload(session, user, data.company_id)
        meta = _metadata(data.metadata)

        file_id = uuid.uuid4()
        key = object_key(file_id)
        digest = hashlib.sha256()
        writer = await storage.open_writer(key)
        try:
            for name in names:
                async for block in storage.iter_range(f"{folder}/parts/{name}"):
                    digest.update(block)
                    await writer.write(block)
            await writer.close()
            if data.checksum and digest.hexdigest() != data.checksum.lower().removeprefix("sha256:"):
                raise invalid("Checksum does not match the assembled file", field="checksum",
                              details={"sha256": digest.hexdigest()})
            row = _new_row(file_id=file_id, user=user, name=manifest["filename"], found=found, size=writer.size,
                           base=base, company_id=company_id, private=data.private, tags=data.tags,
                           meta={**meta, "sha256": digest.hexdigest()}, category=data.type)
            session.add(row)
            await session.commit()  # before the parts go: a failed insert must not lose the upload
        except BaseException:
            await session.rollback()
            await writer.abort()
            raise
        await storage.delete_prefix(folder)
        await session.refresh(row)
        return FileInfo.model_validate(row)
    finally:
        await redis.delete(lock)


# ---------------------------------------------------------------- read / update / delete

async def list_files(*, session: AsyncSession, user: Principal,
                     params: FileListParams) -> tuple[list[FileInfo], Pagination]:
    conditions = [_visible(user)]
    if params.type:
        conditions.append(F.type == params.type)
    if params.company_id:
        conditions.append(F.company_id == params.company_id)
    if params.private is not None:
        conditions.append(F.private.is_(True) if params.private else F.private.is_not(True))
    if params.mine:
        conditions.append(F.uploaded_by == user.id)
    if params.tags:
        wanted = [t.strip() for t in params.tags.split(",") if t.strip()]
        if wanted:
            conditions.append(F.tags.contains(wanted))
    if params.search:
        escaped = params.search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        conditions.append(or_(F.filename.ilike(f"%{escaped}%", escape="\\"),
                              F.original_name.ilike(f"%{escaped}%", escape="\\")))
    where = and_(*conditions)
    total = (await session.execute(select(func.count()).select_from(F).where(where))).scalar_one()
    column = _SORT[params.sort or "createdAt"]
    order = column.asc() if params.order == "asc" else column.desc()
    stmt: Select = select(F).where(where).order_by(order, F.id).offset(params.offset).limit(params.limit)
    rows = (await session.execute(stmt)).scalars().all()
    return ([FileInfo.model_validate(r) for r in rows],
            Pagination.of(page=params.page, limit=params.limit, total=total))


async def get_file(*, session: AsyncSession, user: Principal, file_id: str) -> models.File:
    return await _load_visible(session, user, file_id)


async def update_file(*, session: AsyncSession, user: Principal, file_id: str, data: FileUpdate) -> FileInfo:
    file = await _load_visible(session, user, file_id, for_update=True)
    if file.uploaded_by != user.id:
        raise forbidden("Only the uploader may change this file")
    changes = data.model_dump(exclude_unset=True)
    if "filename" in changes and changes["filename"] is not None:
        file.filename = safe_name(changes["filename"])
    if changes.get("private") is not None:
        file.private = changes["private"]
    if changes.get("tags") is not None:
        file.tags = changes["tags"]
    if changes.get("metadata") is not None:
        # What the server measured (size of an image, checksum) stays.
        server = {k: v for k, v in (file.meta or {}).items() if k in ("width", "height", "sha256")}
        file.meta = {**_metadata(changes["metadata"]), **server}
    file.updated_at = utcnow()
    await session.flush()
    await session.refresh(file)
    return FileInfo.model_validate(file)


async def delete_file(*, session: AsyncSession, user: Principal, file_id: str) -> None:
    file = await _load_visible(session, user, file_id, for_update=True)
    if file.uploaded_by != user.id and not user.is_global:
        raise forbidden("Only the uploader or an administrator may delete this file")
    # Row first (inside the open transaction), then the object, then commit: a
    # storage failure rolls the row back instead of leaving it without bytes.
    await session.delete(file)
    await session.flush()
    await get_storage().delete(object_key(file.id))
    await session.commit()


async def batch_delete(*, session: AsyncSession, user: Principal, data: BatchDelete) -> BatchResult:
    """Per item: each file the caller may delete is deleted; the others are
    reported with their error and do not stop the rest."""
    parsed: list[uuid.UUID | None] = []
    for raw in data.file_ids:
        try:
            parsed.append(uuid.UUID(raw))
        except ValueError:
            parsed.append(None)
    wanted = [p for p in parsed if p is not None]
    rows = (await session.execute(select(F).where(F.id.in_(wanted), _visible(user))
                                  .with_for_update())).scalars().all() if wanted else []
    by_id = {row.id: row for row in rows}
    results: list[BatchItem] = []
    deletable: list[uuid.UUID] = []
    seen: set[uuid.UUID] = set()
    for index, (raw, fid) in enumerate(zip(data.file_ids, parsed, strict=True)):
        file = by_id.get(fid) if fid else None
        if file is None or fid in seen:
            results.append(BatchItem(index=index, id=raw, success=False,
                                     error=ItemError(code=ErrorCode.RESOURCE_NOT_FOUND.value,
                                                     message="File not found")))
            continue
        seen.add(fid)
        if file.uploaded_by != user.id and not user.is_global:
            results.append(BatchItem(index=index, id=raw, success=False,
                                     error=ItemError(code=ErrorCode.INSUFFICIENT_PERMISSIONS.value,
                                                     message="Only the uploader may delete this file")))
            continue
        deletable.append(fid)
        results.append(BatchItem(index=index, id=raw, success=True))
    if deletable:
        await session.execute(delete(F).where(F.id.in_(deletable)))
        storage = get_storage()
        for fid in deletable:
            await storage.delete(object_key(fid))
        await session.commit()
    return BatchResult(deleted=len(deletable), failed=len(results) - len(deletable), results=results)


# ---------------------------------------------------------------- shares

async def create_share(*, session: AsyncSession, user: Principal, file_id: str, data: ShareCreate,
                       base: str) -> ShareRead:
    file = await _load_visible(session, user, file_id)
    if file.uploaded_by != user.id:
        raise forbidden("Only the uploader may share this file")
    now = utcnow()
    expires_at = None
    if data.expires_in is not None:
        expires_at = now + timedelta(seconds=data.expires_in)
    elif data.expires_at is not None:
        value = as_utc(data.expires_at)
        if value <= now:
            raise invalid("expiresAt must be in the future", field="expiresAt")
        expires_at = value
    share = models.FileShare(file_id=file.id, share_id=new_opaque_token(), created_by=user.id,
                             expires_at=expires_at,
                             password_hash=await hash_password(data.password) if data.password else None,
                             allow_download=data.allow_download, allow_preview=data.allow_preview)
    session.add(share)
    await session.flush()
    return ShareRead(share_id=share.share_id, share_url=f"{base}/api/files/shared/{share.share_id}",
                     expires_at=expires_at, protected=share.password_hash is not None,
                     allow_download=data.allow_download, allow_preview=data.allow_preview)


async def open_share(*, session: AsyncSession, share_id: str,
                     password: str | None) -> tuple[models.FileShare, models.File, int]:
    """The share and its file if the link is live and the password right; the
    access is counted atomically in the database."""
    if len(share_id) > 255:
        raise not_found("Share")
    share = (await session.execute(select(models.FileShare)
                                   .where(models.FileShare.share_id == share_id))).scalar_one_or_none()
    file = await session.get(F, share.file_id) if share is not None and share.file_id else None
    if share is None or file is None:
        raise not_found("Share")
    if share.expires_at is not None and share.expires_at <= utcnow():
        raise AppError(ErrorCode.RESOURCE_EXPIRED, "This share link has expired")
    if share.password_hash:
        # Password guessing is bounded per link, across replicas.
        decision = await hit(f"file-share-pw:{share.id}", limit=SHARE_PASSWORD_ATTEMPTS_PER_MINUTE,
                             window_seconds=60)
        if not decision.allowed:
            raise AppError(ErrorCode.RATE_LIMIT_EXCEEDED, "Too many attempts on this link",
                           headers={"Retry-After": str(decision.retry_after_seconds)})
        if not password:
            raise AppError(ErrorCode.UNAUTHORIZED, "This link needs a password",
                           details={"passwordRequired": True})
        if not await verify_password(password, share.password_hash):
            raise AppError(ErrorCode.INVALID_CREDENTIALS, "Wrong password for this link")
    count = (await session.execute(
        update(models.FileShare).where(models.FileShare.id == share.id)
        .values(access_count=func.coalesce(models.FileShare.access_count, 0) + 1, last_accessed_at=utcnow())
        .returning(models.FileShare.access_count))).scalar_one()
    await session.commit()
    return share, file, int(count)


def shared_info(share: models.FileShare, file: models.File, count: int) -> SharedFileInfo:
    return SharedFileInfo(filename=file.filename, mime_type=file.mime_type, size=file.size, type=file.type,
                          created_at=file.created_at, expires_at=share.expires_at,
                          allow_download=bool(share.allow_download), allow_preview=bool(share.allow_preview),
                          access_count=count)


# ---------------------------------------------------------------- usage

async def usage(*, session: AsyncSession, user: Principal) -> StorageUsage:
    mine = F.uploaded_by == user.id
    by_type_rows = (await session.execute(
        select(F.type, func.coalesce(func.sum(F.size), 0), func.count()).where(mine).group_by(F.type))).all()
    by_company_rows = (await session.execute(
        select(F.company_id, func.coalesce(func.sum(F.size), 0))
        .join(models.Company, models.Company.id == F.company_id)
        .where(models.Company.owner_id == user.id).group_by(F.company_id))).all()
    recent = (await session.execute(select(F).where(mine).order_by(F.created_at.desc(), F.id).limit(5))) \
        .scalars().all()
    return StorageUsage(
        total_used=sum(int(r[1]) for r in by_type_rows), total_limit=(await runtime_settings.current()).limits.max_storage_per_user,
        file_count=sum(int(r[2]) for r in by_type_rows),
        by_type={r[0]: int(r[1]) for r in by_type_rows}, count_by_type={r[0]: int(r[2]) for r in by_type_rows},
        by_company={str(r[0]): int(r[1]) for r in by_company_rows},
        recent_uploads=[FileInfo.model_validate(r) for r in recent])
