from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from troupe import __version__
from troupe.db.session import sessionmaker
from troupe.errors import AppError
from troupe.platform.deps import Principal, authenticate_token
from troupe.platform.health import service
from troupe.platform.health.schemas import HealthReport
from troupe.platform.schemas import Envelope, ok

router = APIRouter(prefix="/api/settings", tags=["settings"])
_STARTED = time.monotonic()
_optional_bearer = HTTPBearer(auto_error=False)


async def optional_principal(
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_optional_bearer)],
) -> Principal | None:
    """Health is public; a valid token only unlocks the details."""
    if credentials is None:
        return None
    try:
        async with sessionmaker()() as session:
            return await authenticate_token(credentials.credentials, session)
    except AppError:
        return None


@router.get("/health", response_model=Envelope[HealthReport],
            responses={503: {"model": Envelope[HealthReport], "description": "A dependency is down"}})
async def health(request: Request,
                 principal: Annotated[Principal | None, Depends(optional_principal)]) -> JSONResponse:
    checks = await service.check_all()
    healthy = all(c.status == "up" for c in checks.values())
    if principal is None or not principal.can("system:read"):
        checks = {name: c.model_copy(update={"details": None, "error": None}) for name, c in checks.items()}
    report = HealthReport(status="healthy" if healthy else "unhealthy", version=__version__,
                          uptime_seconds=round(time.monotonic() - _STARTED, 3), checks=checks)
    body = ok(report).model_dump(mode="json", by_alias=True)
    body["success"] = healthy
    return JSONResponse(body, status_code=200 if healthy else 503)
