"""Feature switches (``features.*``) and maintenance mode, as checks any layer can call."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import Depends

from troupe import runtime_settings
from troupe.errors import AppError, ErrorCode, invalid

Feature = Literal["marketplace_enabled", "collaboration_enabled", "analytics_enabled", "audit_log_enabled"]

_LABELS = {"marketplace_enabled": "The marketplace", "collaboration_enabled": "Collaboration",
           "analytics_enabled": "Analytics", "audit_log_enabled": "The audit log"}


async def ensure_feature(name: Feature) -> None:
    """BIZ_007 (403) when an administrator switched the feature off."""
    if not getattr((await runtime_settings.current()).features, name):
        raise AppError(ErrorCode.FEATURE_DISABLED, f"{_LABELS[name]} is disabled on this server",
                       details={"feature": name.removesuffix("_enabled")})


def requires_feature(name: Feature):
    """Router- or route-level dependency: ``dependencies=[requires_feature("analytics_enabled")]``."""

    async def check() -> None:
        await ensure_feature(name)

    return Depends(check)


async def maintenance_message() -> str | None:
    """The maintenance message when maintenance mode is on, else None."""
    maintenance = (await runtime_settings.current()).maintenance
    if not maintenance.enabled:
        return None
    return maintenance.message or "The service is under maintenance; try again later"


async def ensure_not_maintenance() -> None:
    """BIZ_008 (503) during maintenance: for work started outside HTTP (actors, schedules)."""
    message = await maintenance_message()
    if message is not None:
        raise AppError(ErrorCode.MAINTENANCE_MODE, message)


# Company settings keys capped by ``limits`` (a company asks, the server caps).
_COMPANY_CAPS = {"maxAgents": "max_agents_per_company", "maxTools": "max_tools_per_company",
                 "maxConcurrency": "max_concurrent_tasks"}


async def ensure_company_settings(settings: dict[str, Any], asked: dict[str, Any]) -> dict[str, Any]:
    """Refuse (VAL_001) a company setting the caller asked for above the server's
    limit; lower a default or previously stored value that exceeds it."""
    limits = (await runtime_settings.current()).limits
    capped = dict(settings)
    for key, limit_name in _COMPANY_CAPS.items():
        cap = getattr(limits, limit_name)
        if isinstance(asked.get(key), int) and asked[key] > cap:
            raise invalid(f"settings.{key} may be at most {cap} on this server", field=f"settings.{key}",
                          details={"limit": cap, "requested": asked[key]})
        if isinstance(capped.get(key), int) and capped[key] > cap:
            capped[key] = cap
    return capped


async def ensure_team_size(members: int, *, field: str = "teamMembers") -> None:
    """RES_004 when the owner plus ``members`` exceed ``limits.maxUsersPerCompany``."""
    cap = (await runtime_settings.current()).limits.max_users_per_company
    if members + 1 > cap:
        raise AppError(ErrorCode.RESOURCE_LIMIT_EXCEEDED,
                       f"A company may have at most {cap} people (owner included) on this server",
                       field=field, details={"limit": cap, "requested": members + 1})
