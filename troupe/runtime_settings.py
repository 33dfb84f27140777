"""The effective runtime settings: the ``system_settings`` rows (``PUT /api/settings``)
over the environment's defaults (``get_settings()``).

One accessor, :func:`current`, for the API, actors and Ray tasks. Each process
keeps the last loaded value; at most every ``CHECK_SECONDS`` it reads a version
counter in Redis (bumped by :func:`invalidate` after every committed change) and
reloads from the database only when the counter moved. The process that made the
change drops its copy at once, so its next request already sees it."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel
from sqlalchemy import select

from troupe.config import get_settings
from troupe.db import models
from troupe.infra.redis import fast_path, get_redis, rkey
from troupe.platform.system import schemas

log = logging.getLogger(__name__)

CHECK_SECONDS = 1.0

SECTIONS: dict[str, type[BaseModel]] = {
    name: info.annotation  # type: ignore[misc]
    for name, info in schemas.SystemSettings.model_fields.items() if name != "updated_at"
}


def version_key() -> str:
    return rkey("settings", "version")


def env_defaults() -> dict[str, dict[str, Any]]:
    """What each section means when nothing was stored: the environment's values."""
    env = get_settings()
    return {
        "general": {key: value for key, value in (("site_url", env.frontend_url), ("admin_email", env.admin_email))
                    if value},
        "security": {
            "session_timeout": math.ceil(env.jwt_expires_in.total_seconds() / 60),
            "max_login_attempts": env.login_max_attempts,
            "lockout_duration": math.ceil(env.login_lockout.total_seconds() / 60),
        },
        "limits": {"max_file_size": env.max_upload_bytes, "max_storage_per_user": env.storage_quota_bytes},
        "features": {"marketplace_enabled": env.marketplace_enabled,
                     "collaboration_enabled": env.collaboration_enabled,
                     "analytics_enabled": env.analytics_enabled, "audit_log_enabled": env.audit_log_enabled},
        "rate_limits": {"window_ms": int(env.rate_limit_window_ms.total_seconds() * 1000),
                        "max_requests": env.rate_limit_max_requests},
    }


def effective_section(section: str, stored: dict[str, Any] | None) -> BaseModel:
    """Stored keys win; keys never stored take the environment's value, then the
    model's default. Environment values are taken as given (not re-validated):
    an operator's setting is not refused for being outside the API's ranges."""
    model = SECTIONS[section].model_validate(stored or {})
    fallback = {k: v for k, v in env_defaults().get(section, {}).items() if k not in model.model_fields_set}
    if section == "general" and "site_url" in fallback:
        try:
            fallback["site_url"] = schemas.General.model_validate({"site_url": fallback["site_url"]}).site_url
        except ValueError:
            fallback.pop("site_url")
    return model.model_copy(update=fallback)


def overlay(stored: dict[str, dict[str, Any]], updated_at=None) -> schemas.SystemSettings:
    return schemas.SystemSettings.model_construct(
        updated_at=updated_at, **{name: effective_section(name, stored.get(name)) for name in SECTIONS})


async def load(session) -> schemas.SystemSettings:
    rows = (await session.execute(select(models.SystemSetting))).scalars().all()
    stored = {row.section: row.value for row in rows if row.section in SECTIONS}
    return overlay(stored, max((row.updated_at for row in rows), default=None))


@dataclass
class _Cached:
    value: schemas.SystemSettings
    version: str | None
    checked: float


_cache: _Cached | None = None


async def current() -> schemas.SystemSettings:
    """The effective settings; at most ``CHECK_SECONDS`` stale across processes."""
    global _cache
    now = time.monotonic()
    cached = _cache
    if cached is not None and now - cached.checked < CHECK_SECONDS:
        return cached.value
    try:
        # Only a freshness check with a safe fallback, on every request's path: a hung
        # Redis must not cost more than the short budget.
        async with fast_path():
            version = await get_redis().get(version_key())
    except Exception as exc:  # noqa: BLE001 - Redis down: keep serving the last known settings
        log.warning("settings version unavailable (%s); using the last known settings", type(exc).__name__)
        if cached is not None:
            cached.checked = now
            return cached.value
        version = None
    if cached is not None and version == cached.version:
        cached.checked = now
        return cached.value
    from troupe.db.session import session_scope

    async with session_scope() as session:
        value = await load(session)
    _cache = _Cached(value=value, version=version, checked=now)
    return value


async def invalidate() -> None:
    """Call after committing a change: this process reloads on its next read,
    every other one within ``CHECK_SECONDS``."""
    global _cache
    _cache = None
    await get_redis().incr(version_key())
