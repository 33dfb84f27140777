"""Pure-ASGI middleware: request id and timing, body size limit, security headers.

Pure ASGI (not BaseHTTPMiddleware) so that WebSocket traffic passes untouched and
streaming bodies are counted as they arrive.
"""

from __future__ import annotations

import ipaddress
import json
import re
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from troupe.errors import ErrorCode
from troupe.platform.context import RequestContext, set_request

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"permissions-policy", b"geolocation=(), microphone=(), camera=()"),
    (b"strict-transport-security", b"max-age=31536000; includeSubDomains"),
]
# /docs loads Swagger UI from a CDN; every other response forbids all active content.
_API_CSP = (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'")


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def trusted_networks(entries: list[str]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(entry, strict=False) for entry in entries)


def _trusted(address: str, networks: tuple[Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)


def client_ip(peer: str | None, forwarded_for: str, networks: tuple[Network, ...]) -> str | None:
    """The client's address for rate limits and audit. ``X-Forwarded-For`` is read only
    when the socket peer is a trusted proxy (anyone can send the header), and then from
    the right: each trusted proxy appended the address it saw, so the right-most hop
    that is not a trusted proxy is the client. A malformed hop ends the walk at the last
    trusted address (it was not written by a proxy of ours)."""
    if not peer or not networks or not _trusted(peer, networks):
        return peer
    current = peer
    for hop in reversed([h.strip() for h in forwarded_for.split(",") if h.strip()]):
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            return current
        current = hop
        if not _trusted(hop, networks):
            return hop
    return current


class RequestContextMiddleware:
    """Accept a well-formed X-Request-ID or make one; echo it on the response; resolve
    the client IP (``client_ip``, with ``TRUSTED_PROXIES``).

    Behind Serve the proxy already assigns the id (it forwards the caller's or
    generates one) and echoes it, so we adopt it and do not add a second header."""

    def __init__(self, app: ASGIApp, *, security_headers: bool = True, echo_request_id: bool = True,
                 trusted_proxies: list[str] | None = None) -> None:
        from troupe.config import get_settings

        self.app = app
        self.security_headers = security_headers
        self.echo_request_id = echo_request_id
        self.trusted = trusted_networks(get_settings().trusted_proxies if trusted_proxies is None
                                        else trusted_proxies)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        incoming = headers.get(b"x-request-id", b"").decode("latin-1")
        if not self.echo_request_id and incoming:
            request_id = incoming[:128]
        else:
            request_id = incoming if _REQUEST_ID.match(incoming) else str(uuid.uuid4())
        client = scope.get("client")
        forwarded = b",".join(v for k, v in scope.get("headers") or [] if k == b"x-forwarded-for").decode("latin-1")
        ctx = RequestContext(request_id=request_id,
                             client_ip=client_ip(client[0] if client else None, forwarded, self.trusted))
        set_request(ctx)
        scope.setdefault("state", {})["request_id"] = request_id
        path = scope.get("path", "")
        if scope["type"] == "websocket":  # no response headers to add; keep frames off this path
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                extra = [(b"x-request-id", request_id.encode())] if self.echo_request_id else []
                if self.security_headers:
                    extra += SECURITY_HEADERS
                    if not path.startswith(("/docs", "/redoc")):
                        extra.append(_API_CSP)
                message["headers"] = list(message.get("headers", [])) + extra
            await send(message)

        await self.app(scope, receive, send_with_headers)


class BodySizeLimitMiddleware:
    """Refuse bodies over the limit (VAL_008, 413), by header or by counting."""

    def __init__(self, app: ASGIApp, *, max_bytes: int, exempt_prefixes: tuple[str, ...] = ()) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.exempt_prefixes = exempt_prefixes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path", "").startswith(self.exempt_prefixes):
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._reject(scope, send)
            return
        received = 0
        too_large = False

        async def counting_receive() -> Message:
            nonlocal received, too_large
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    too_large = True
                    raise _BodyTooLarge
            return message

        try:
            await self.app(scope, counting_receive, send)
        except _BodyTooLarge:
            await self._reject(scope, send)

    async def _reject(self, scope: Scope, send: Send) -> None:
        from troupe.platform.schemas import build_meta

        body = json.dumps({
            "success": False,
            "error": {"code": ErrorCode.FILE_TOO_LARGE.value,
                      "message": f"Request body exceeds {self.max_bytes} bytes", "details": None,
                      "field": None},
            "meta": build_meta().model_dump(by_alias=True),
        }).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


class _BodyTooLarge(Exception):
    pass
