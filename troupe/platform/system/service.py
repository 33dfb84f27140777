"""Runtime system settings: one JSONB row per section in ``system_settings``.

Reads return the defaults merged with what was stored; PUT merges a partial
section into the stored one and validates the result as a whole, so a stored
section is always valid. Integration API keys are sealed at rest and never
returned."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from troupe.db import models
from troupe.errors import invalid
from troupe.platform.auth.audit import audit
from troupe.platform.deps import Principal
from troupe.platform.system import schemas
from troupe.security import SecretBox

SECTIONS: dict[str, type[schemas.CamelModel]] = {
    name: info.annotation  # type: ignore[misc]
    for name, info in schemas.SystemSettings.model_fields.items() if name != "updated_at"
}


def _public(section: str, value: dict[str, Any]) -> schemas.CamelModel:
    model = SECTIONS[section].model_validate(value)
    if isinstance(model, schemas.Integrations):
        for name in schemas.Integrations.model_fields:
            integration: schemas.Integration = getattr(model, name)
            integration.api_key_set = bool(integration.api_key)
            integration.api_key = None  # write-only
    return model


async def read_settings(*, session: AsyncSession) -> schemas.SystemSettings:
    rows = (await session.execute(select(models.SystemSetting))).scalars().all()
    stored = {row.section: row.value for row in rows if row.section in SECTIONS}
    updated = max((row.updated_at for row in rows), default=None)
    return schemas.SystemSettings(updated_at=updated,
                                  **{name: _public(name, stored.get(name, {})) for name in SECTIONS})


def _merge(current: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """Nested objects merge key by key; lists and scalars replace."""
    merged = dict(current)
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict) and key != "settings":
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _seal_keys(patch: dict[str, Any]) -> dict[str, Any]:
    box = SecretBox()
    for integration in patch.values():
        if isinstance(integration, dict) and "api_key" in integration:
            key = integration["api_key"]
            integration["api_key"] = box.seal(key) if key else None
    return patch


async def update_settings(*, session: AsyncSession, user: Principal,
                          body: schemas.SettingsUpdate) -> schemas.SystemSettings:
    patch = body.model_dump(mode="json", exclude_unset=True, by_alias=False)
    if not patch:
        raise invalid("No settings to update")
    rows = {row.section: row for row in (await session.execute(
        select(models.SystemSetting).where(models.SystemSetting.section.in_(list(patch))).with_for_update()
    )).scalars()}
    changed: dict[str, list[str]] = {}
    for section, section_patch in patch.items():
        if section_patch is None:
            raise invalid(f"{section} cannot be null", field=section)
        if section == "integrations":
            section_patch = _seal_keys(section_patch)
        row = rows.get(section)
        merged = _merge(row.value if row else {}, section_patch)
        try:
            value = SECTIONS[section].model_validate(merged).model_dump(mode="json", by_alias=False)
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
    # Audit says which keys changed, never their values (they may be secrets).
    await audit(session, action="settings.update", message=f"System settings updated: {', '.join(changed)}",
                user_id=user.id, changed=changed)
    return await read_settings(session=session)
