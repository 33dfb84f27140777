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
from troupe.timeutil import utcnow

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
            responses={503: {"model": Envelope[HealthReport],
                             "description": "A critical service (database, redis, queue) is down"}})
async def health(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_optional_bearer)],
                 ) -> JSONResponse:
    # Concurrently: a dead backend costs the caller one probe timeout, not one per step.
    principal, probes = await asyncio.gather(optional_principal(credentials), service.check_all())
    full = principal is not None and principal.can("system:read")
    status = service.overall(probes)
    report = HealthReport(status=status, version=__version__, uptime=round(time.monotonic() - _STARTED, 3),
                          timestamp=utcnow(), services=service.services(probes, full=full),
                          checks=[p.check() for p in probes] if full else [],
                          down=[p.name for p in probes if p.status == "down"])
    body = ok(report).model_dump(mode="json", by_alias=True)
    unhealthy = status == "unhealthy"
    body["success"] = not unhealthy
    # Retry-After tells a load balancer or client when to look again.
    headers = {"Retry-After": str(get_settings().outage_retry_after)} if unhealthy else None
    return JSONResponse(body, status_code=503 if unhealthy else 200, headers=headers)


async def startup_hook() -> None:
    await service.warm_up()
