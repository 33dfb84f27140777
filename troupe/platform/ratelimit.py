"""General API rate limit per client IP: ``rateLimits.windowMs/maxRequests`` of the
system settings (defaults RATE_LIMIT_WINDOW_MS / RATE_LIMIT_MAX_REQUESTS), read
through the cached ``troupe.runtime_settings`` on each request.

Pure ASGI so WebSocket traffic and streaming bodies pass untouched. It sits
inside RequestContextMiddleware, which already resolved the client IP (the socket
peer, or X-Forwarded-For's right-most untrusted hop behind a ``TRUSTED_PROXIES`` proxy).

When Redis does not answer, each replica counts in its own memory
(``LocalLimiter``: same window and limit, so a client gets at most replicas × limit)
instead of letting everything through. The auth routes also count in Redis
themselves and fail closed (503 SYS_005) when they cannot (auth/service.py)."""

from __future__ import annotations

import json
import logging
import math
import time
from collections import OrderedDict, deque

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from troupe import runtime_settings
from troupe.config import get_settings
from troupe.errors import ErrorCode
from troupe.infra.ratelimit import RateDecision, hit
from troupe.infra.redis import fast_path
from troupe.platform.context import current_request

log = logging.getLogger(__name__)

EXEMPT_PREFIXES = ("/api/settings/health", "/docs", "/redoc", "/openapi.json")
# The settings themselves stay reachable (administrators only), so a too-low
# rateLimits.maxRequests can always be corrected.
EXEMPT_PATHS = frozenset({"/api/settings"})


def api_key(ip: str | None) -> str:
    return f"api:ip:{ip or 'unknown'}"


class LocalLimiter:
    """A sliding window per key in this process: the fallback while Redis is down.
    At most ``max_keys`` keys are kept (least recently used go first), so a flood of
    addresses cannot grow it without bound."""

    def __init__(self, max_keys: int = 10_000) -> None:
        self.max_keys = max_keys
        self.windows: OrderedDict[str, deque[float]] = OrderedDict()

    def hit(self, key: str, *, limit: int, window_seconds: float, now: float | None = None) -> RateDecision:
        now = time.monotonic() if now is None else now
        window = self.windows.pop(key, None) or deque()
        self.windows[key] = window
        while len(self.windows) > self.max_keys:
            self.windows.popitem(last=False)
        while window and window[0] <= now - window_seconds:
            window.popleft()
        if len(window) >= limit:
            retry = max(1, math.ceil(window[0] + window_seconds - now))
            return RateDecision(False, len(window), limit, retry)
        window.append(now)
        return RateDecision(True, len(window), limit, 0)


_local = LocalLimiter()


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
            limit, window_seconds = rates.max_requests, rates.window_ms / 1000
        except Exception as exc:  # noqa: BLE001 - the settings' store is down: the environment's limits
            log.warning("rate limit settings unavailable (%s); using the environment's", type(exc).__name__)
            settings = get_settings()
            limit, window_seconds = settings.rate_limit_max_requests, settings.rate_limit_window_ms.total_seconds()
        key = api_key(current_request().client_ip)
        try:
            async with fast_path():  # a hung Redis costs a request at most redis_fast_timeout here
                decision = await hit(key, limit=limit, window_seconds=window_seconds)
        except Exception as exc:  # noqa: BLE001
            # Redis is down: count in this replica rather than admit everything (refusing
            # everything would turn a limiter outage into a full outage).
            log.warning("rate limiter unavailable (%s); counting in process", type(exc).__name__)
            decision = _local.hit(key, limit=limit, window_seconds=window_seconds)
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
