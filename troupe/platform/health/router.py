from __future__ import annotations

import asyncio
import time
from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from troupe import __version__
from troupe.config import get_settings
from troupe.db.session import sessionmaker
from troupe.platform.deps import Principal, authenticate_token
from troupe.platform.health import service
from troupe.platform.health.schemas import HealthReport
from troupe.platform.schemas import Envelope, ok

router = APIRouter(prefix="/api/settings", tags=["settings"])
_STARTED = time.monotonic()
_optional_bearer = HTTPBearer(auto_error=False)


async def optional_principal(credentials: HTTPAuthorizationCredentials | None) -> Principal | None:
    """Health is public; a valid token only unlocks the details. Authenticating needs
    Postgres and Redis, the very things being checked, so any failure (an invalid token,
    an outage, a hang past the probe timeout) just means the public report."""
    if credentials is None:
        return None
    try:
        async with asyncio.timeout(get_settings().health_probe_timeout.total_seconds()), \
                sessionmaker()() as session:
            return await authenticate_token(credentials.credentials, session)
    except Exception:  # noqa: BLE001 - see the docstring: the report goes out regardless
        return None


@router.get("/health", response_model=Envelope[HealthReport],
            responses={503: {"model": Envelope[HealthReport], "description": "A dependency is down"}})
async def health(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_optional_bearer)],
                 ) -> JSONResponse:
    # Concurrently: a dead backend costs the caller one probe timeout, not one per step.
    principal, checks = await asyncio.gather(optional_principal(credentials), service.check_all())
    healthy = all(c.status == "up" for c in checks.values())
    if principal is None or not principal.can("system:read"):
        checks = {name: c.model_copy(update={"details": None, "error": None}) for name, c in checks.items()}
    report = HealthReport(status="healthy" if healthy else "unhealthy", version=__version__,
                          uptime_seconds=round(time.monotonic() - _STARTED, 3), checks=checks,
                          down=sorted(name for name, c in checks.items() if c.status == "down"))
    body = ok(report).model_dump(mode="json", by_alias=True)
    body["success"] = healthy
    # Retry-After tells a load balancer or client when to look again.
    headers = None if healthy else {"Retry-After": str(get_settings().outage_retry_after)}
    return JSONResponse(body, status_code=200 if healthy else 503, headers=headers)


async def startup_hook() -> None:
    await service.warm_up()
