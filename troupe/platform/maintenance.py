"""Maintenance mode (``maintenance.enabled`` in the system settings).

Pure ASGI, outside the routers, so that no write slips through a route that
forgot a check: while maintenance is on, every POST/PUT/PATCH/DELETE by anyone
but an administrator (SUPER_ADMIN, ADMIN) gets BIZ_008 (503) with the message.
Reads, WebSocket traffic, login/refresh/logout and health keep working, and
administrators keep full access (they turn maintenance off again). The caller
is authenticated only while maintenance is on: normal traffic pays one cached
settings lookup."""

from __future__ import annotations

import json
import logging

from starlette.types import ASGIApp, Receive, Scope, Send

from troupe.errors import ErrorCode
from troupe.platform.system.gates import maintenance_message

log = logging.getLogger(__name__)

MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
EXEMPT_PATHS = frozenset({"/api/auth/login", "/api/auth/refresh", "/api/auth/logout"})
EXEMPT_PREFIXES = ("/api/settings/health",)


class MaintenanceMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or scope.get("method") not in MUTATING \
                or path.rstrip("/") in EXEMPT_PATHS or path.startswith(EXEMPT_PREFIXES):
            await self.app(scope, receive, send)
            return
        try:
            message = await maintenance_message()
        except Exception:  # noqa: BLE001 - settings unreadable (database down): requests fail on their own
            log.warning("maintenance state unavailable; request admitted", exc_info=True)
            message = None
        if message is None or await _is_admin(scope):
            await self.app(scope, receive, send)
            return
        await _reject(send, message)


async def _is_admin(scope: Scope) -> bool:
    from troupe.db.session import session_scope
    from troupe.platform.deps import authenticate_token

    header = dict(scope.get("headers") or []).get(b"authorization", b"").decode("latin-1")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return False
    try:
        async with session_scope() as session:
            principal = await authenticate_token(token.strip(), session)
    except Exception:  # noqa: BLE001 - any invalid token is simply not an administrator
        return False
    return principal.is_global


async def _reject(send: Send, message: str) -> None:
    from troupe.platform.schemas import build_meta

    meta = build_meta()
    body = json.dumps({
        "success": False,
        "error": {"code": ErrorCode.MAINTENANCE_MODE.value, "message": message, "details": None, "field": None,
                  "timestamp": meta.timestamp, "requestId": meta.request_id},
        "meta": meta.model_dump(by_alias=True),
    }).encode()
    await send({"type": "http.response.start", "status": 503,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"retry-after", b"60")]})
    await send({"type": "http.response.body", "body": body})
