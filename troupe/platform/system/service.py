"""Runtime system settings: one JSONB row per section in ``system_settings``.

Reads return the effective values (``troupe.runtime_settings``: what was stored
over the environment's defaults); PUT merges a partial section into the stored
one and validates it, storing only keys ever set, so unset keys keep following
the environment."""

from __future__ import annotations

from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from troupe import runtime_settings
from troupe.db import models
from troupe.errors import invalid
from troupe.events.alerts import raise_alert
from troupe.platform.auth.audit import audit
from troupe.platform.deps import Principal
from troupe.platform.schemas import deep_merge
from troupe.platform.system import schemas

SECTIONS = runtime_settings.SECTIONS


async def read_settings(*, session: AsyncSession) -> schemas.SystemSettings:
    return await runtime_settings.load(session)


async def update_settings(*, session: AsyncSession, user: Principal,
                          body: schemas.SettingsUpdate) -> schemas.SystemSettings:
    patch = body.model_dump(mode="json", exclude_unset=True, by_alias=False)
    if not patch:  # nothing to change (every field is optional): the settings as they are
        return await runtime_settings.load(session)
    rows = {row.section: row for row in (await session.execute(
        select(models.SystemSetting).where(models.SystemSetting.section.in_(list(patch))).with_for_update()
    )).scalars()}
    before = await runtime_settings.load(session)
    changed: dict[str, list[str]] = {}
    for section, section_patch in patch.items():
        if section_patch is None:
            raise invalid(f"{section} cannot be null", field=section)
        row = rows.get(section)
        merged = deep_merge(row.value if row else {}, section_patch)
        try:
            value = SECTIONS[section].model_validate(merged).model_dump(mode="json", by_alias=False,
                                                                        exclude_unset=True)
        except ValidationError as exc:
            raise invalid(f"Invalid {section} settings", field=section,
                          details=[{"field": ".".join(str(p) for p in e["loc"]), "message": e["msg"]}
                                   for e in exc.errors()]) from exc
        if row is None:
            session.add(models.SystemSetting(section=section, value=value, updated_by=user.id))
        else:
            row.value, row.updated_by, row.updated_at = value, user.id, func.now()
        changed[section] = sorted(section_patch)
    await session.flush()
    # Audit says which keys changed, not their values.
    await audit(session, action="settings.update", message=f"System settings updated: {', '.join(changed)}",
                user_id=user.id, changed=changed)
    after = await read_settings(session=session)
    # Announced once the change is flushed (the request commits right after this returns).
    await _announce_maintenance(before.maintenance, after.maintenance)
    return after


async def _announce_maintenance(before: schemas.Maintenance, after: schemas.Maintenance) -> None:
    """Everyone connected hears when maintenance starts or ends (they cannot write meanwhile)."""
    if bool(before.enabled) == bool(after.enabled):
        return
    if after.enabled:
        await raise_alert(severity="medium", title="Maintenance mode on",
                          description=after.message or "The service is in maintenance: changes are refused.",
                          source="settings", affected=["api"], actions=["Retry writes when maintenance ends"],
                          rooms=("global", "admin"))
    else:
        await raise_alert(severity="low", title="Maintenance mode off",
                          description="The service accepts changes again.", source="settings",
                          affected=["api"], actions=[], rooms=("global", "admin"))
