"""System settings, backups and restore. ``GET /api/settings/health`` lives in
the health domain; no route here takes a path parameter, so none shadows it."""

from __future__ import annotations

from fastapi import APIRouter

from troupe import runtime_settings
from troupe.platform.deps import Authorized, DbSession
from troupe.platform.schemas import Envelope, ok
from troupe.platform.system import backup, schemas, service

router = APIRouter(prefix="/api/settings", tags=["settings"])


@router.get("", response_model=Envelope[schemas.SystemSettings])
async def get_settings(session: DbSession, user: Authorized("system:read")):
    return ok(await service.read_settings(session=session))


@router.put("", response_model=Envelope[schemas.SystemSettings])
async def update_settings(body: schemas.SettingsUpdate, session: DbSession, user: Authorized("system:update")):
    settings = await service.update_settings(session=session, user=user, body=body)
    await session.commit()  # visible to the next request before the response is sent
    await runtime_settings.invalidate()
    return ok(settings)


@router.post("/backup", response_model=Envelope[schemas.BackupOut], status_code=201)
async def create_backup(session: DbSession, user: Authorized("system:manage"),
                        body: schemas.BackupCreate | None = None):
    created = await backup.create_backup(session=session, user=user, body=body or schemas.BackupCreate())
    await session.commit()
    return ok(created)


@router.get("/backups", response_model=Envelope[list[schemas.BackupOut]])
async def list_backups(user: Authorized("system:manage")):
    return ok(await backup.list_backups())


@router.post("/restore", response_model=Envelope[schemas.RestoreResult])
async def restore(body: schemas.RestoreRequest, session: DbSession, user: Authorized("system:manage")):
    # End the request's transaction: its lock on `users` (taken while
    # authenticating) would block the restore's TRUNCATE.
    await session.commit()
    result = await backup.restore_backup(user=user, body=body)
    await runtime_settings.invalidate()  # the restored system_settings rows
    return ok(result)
