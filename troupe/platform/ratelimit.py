"""General API rate limit per client IP: ``rateLimits.windowMs/maxRequests`` of the
system settings (defaults RATE_LIMIT_WINDOW_MS / RATE_LIMIT_MAX_REQUESTS), read
through the cached ``troupe.runtime_settings`` on each request.

Pure ASGI so WebSocket traffic and streaming bodies pass untouched. It sits
inside RequestContextMiddleware, which already resolved the client IP
(X-Forwarded-For first hop, then the socket peer)."""

from __future__ import annotations

import json
import logging

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from troupe import runtime_settings
from troupe.errors import ErrorCode
from troupe.infra.ratelimit import hit
from troupe.infra.redis import fast_path
from troupe.platform.context import current_request

log = logging.getLogger(__name__)

EXEMPT_PREFIXES = ("/api/settings/health", "/docs", "/redoc", "/openapi.json")
# The settings themselves stay reachable (administrators only), so a too-low
# rateLimits.maxRequests can always be corrected.
EXEMPT_PATHS = frozenset({"/api/settings"})


def api_key(ip: str | None) -> str:
    return f"api:ip:{ip or 'unknown'}"


class ApiRateLimitMiddleware:
    def __init__(self, app: ASGIApp, *, exempt_prefixes: tuple[str, ...] = EXEMPT_PREFIXES) -> None:
        self.app = app
        self.exempt_prefixes = exempt_prefixes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") == "OPTIONS" \
                or scope.get("path", "").startswith(self.exempt_prefixes) \
                or scope.get("path", "").rstrip("/") in EXEMPT_PATHS:
            await self.app(scope, receive, send)
            return
        try:
            rates = (await runtime_settings.current()).rate_limits
            limit = rates.max_requests
            async with fast_path():  # a hung Redis costs a request at most redis_fast_timeout here
                decision = await hit(api_key(current_request().client_ip), limit=limit,
                                     window_seconds=rates.window_ms / 1000)
        except Exception as exc:  # noqa: BLE001
            # Fail open: a request that needs Redis or Postgres answers 503 on its own a moment
            # later, and one that does not is served; refusing everything would turn a limiter
            # outage into a full outage. (The login limiter fails closed: auth/service.py.)
            log.warning("rate limiter unavailable (%s); request admitted", type(exc).__name__)
            await self.app(scope, receive, send)
            return
        if not decision.allowed:
            await self._reject(send, decision.retry_after_seconds, limit)
            return
        remaining = str(max(0, limit - decision.count)).encode()

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (b"x-ratelimit-limit", str(limit).encode()),
                                      (b"x-ratelimit-remaining", remaining)]
            await send(message)

        await self.app(scope, receive, send_with_headers)

    async def _reject(self, send: Send, retry_after: int, limit: int) -> None:
        from troupe.platform.schemas import build_meta

        meta = build_meta()
        body = json.dumps({
            "success": False,
            "error": {"code": ErrorCode.RATE_LIMIT_EXCEEDED.value, "message": "Too many requests; try again later",
                      "details": {"retryAfter": retry_after, "limit": limit}, "field": None,
                      "timestamp": meta.timestamp, "requestId": meta.request_id},
            "meta": meta.model_dump(by_alias=True),
        }).encode()
        await send({"type": "http.response.start", "status": 429,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"retry-after", str(retry_after).encode()),
                                (b"x-ratelimit-limit", str(limit).encode()), (b"x-ratelimit-remaining", b"0")]})
        await send({"type": "http.response.body", "body": body})
