"""The one guarded HTTP client for every request Troupe sends on a user's behalf
(tools, webhook nodes, notification webhooks, custom model endpoints).

What it guards against: server-side request forgery. A destination is refused
when its host resolves to ANY loopback, private, link-local, unspecified,
multicast, reserved, carrier-grade-NAT or cloud-metadata address, unless an
administrator allow-lists the host name or a covering CIDR in
``TROUPE_OUTBOUND_ALLOWLIST`` (a cloud-metadata address needs an exact entry).

The check happens inside the connection itself: a network backend resolves the
host once, vets every address, and connects to a vetted IP while the URL (and
so the Host header, SNI and certificate check) keeps the original name. A DNS
answer that changes between check and connect (rebinding) therefore cannot
reach anything unchecked. Redirects are followed by hand, at most
``MAX_REDIRECTS``, and every hop goes through the same connection check.

Errors are ``OutboundError`` (an ``AppError``) with the spec's codes:
``BIZ_003`` for a refused destination, redirect loop or oversized response
(``details.reason`` says which), ``SYS_006`` timeout, ``SYS_007`` network,
``SYS_003``/``SYS_004`` for upstream HTTP errors when ``raise_for_status``.
``check_url`` raises ``VAL_001`` so configured URLs can be vetted at save time.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json as jsonlib
import socket
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from types import ModuleType
from typing import Any

import httpx

from troupe.config import get_settings
from troupe.errors import AppError, ErrorCode

MAX_REDIRECTS = 5
IDEMPOTENCY_HEADER = "Idempotency-Key"

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Instance-metadata endpoints hand out cloud credentials: the classic SSRF prize.
METADATA_ADDRESSES = frozenset({
    ipaddress.ip_address("169.254.169.254"),
    ipaddress.ip_address("169.254.170.2"),  # ECS task metadata
    ipaddress.ip_address("100.100.100.200"),  # Alibaba Cloud
    ipaddress.ip_address("fd00:ec2::254"),
})
METADATA_HOSTS = frozenset({"metadata.google.internal", "metadata.goog", "metadata",
                            "instance-data", "instance-data.ec2.internal"})
_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_REDIRECT_DROP_HEADERS = ("host", "content-length", "transfer-encoding")
_CROSS_ORIGIN_DROP_HEADERS = ("authorization", "cookie", "proxy-authorization")


class OutboundError(AppError):
    """An outbound request that was refused or failed. ``reason`` is a stable
    machine word (destination_not_allowed, timeout, network, ...)."""

    def __init__(self, code: ErrorCode, message: str, *, reason: str, retryable: bool = False,
                 details: dict[str, Any] | None = None, field: str | None = None) -> None:
        super().__init__(code, message, details={"reason": reason, **(details or {})}, field=field)
        self.reason = reason
        self.retryable = retryable

    def __reduce__(self):  # picklable across Ray processes, subclass kept
        extra = {k: v for k, v in (self.details or {}).items() if k != "reason"}
        return (_rebuild_outbound_error, (self.code, self.message, self.reason, self.retryable, extra, self.field))


def _rebuild_outbound_error(code, message, reason, retryable, details, field) -> OutboundError:
    return OutboundError(code, message, reason=reason, retryable=retryable, details=details, field=field)


def _refused(host: str, why: str) -> OutboundError:
    return OutboundError(ErrorCode.TOOL_ERROR, f"destination not allowed: {host} ({why})",
                         reason="destination_not_allowed", details={"host": host, "why": why})


@dataclass(frozen=True)
class OutboundResponse:
    status: int
    headers: dict[str, str]  # lower-case names; repeated headers joined with ", "
    body: bytes
    elapsed_ms: float
    final_url: str
    redirects: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        charset = "utf-8"
        for part in self.headers.get("content-type", "").split(";")[1:]:
            key, _, value = part.strip().partition("=")
            if key.lower() == "charset" and value:
                charset = value.strip('"')
        return self.body.decode(charset, errors="replace")

    def json(self) -> Any:
        try:
            return jsonlib.loads(self.body)
        except ValueError as exc:
            raise OutboundError(ErrorCode.EXTERNAL_SERVICE_ERROR, f"response from {self.final_url} is not JSON",
                                reason="invalid_json") from exc


# ---- destination policy ----------------------------------------------------------------------

@dataclass(frozen=True)
class _Allowlist:
    names: frozenset[str]
    suffixes: tuple[str, ...]  # from "*.example.internal" entries
    networks: tuple[IPNetwork, ...]

    def admits_name(self, name: str) -> bool:
        return name in self.names or any(name.endswith(s) for s in self.suffixes)

    def admits_address(self, ip: IPAddress, *, exact_only: bool) -> bool:
        for net in self.networks:
            if ip.version == net.version and ip in net and (not exact_only or net.num_addresses == 1):
                return True
        return False


@lru_cache(maxsize=8)
def _parse_allowlist(entries: tuple[str, ...]) -> _Allowlist:
    names: set[str] = set()
    suffixes: list[str] = []
    networks: list[IPNetwork] = []
    for raw in entries:
        entry = raw.strip().lower().rstrip(".")
        if not entry:
            continue
        if entry.startswith("[") and entry.endswith("]"):
            entry = entry[1:-1]
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
            continue
        except ValueError:
            pass
        if entry.startswith("*."):
            suffixes.append(entry[1:])
        else:
            names.add(entry)
    return _Allowlist(frozenset(names), tuple(suffixes), tuple(networks))


def _allowlist() -> _Allowlist:
    return _parse_allowlist(tuple(get_settings().outbound_allowlist))


def blocked_reason(ip: IPAddress) -> str | None:
    """Why ``ip`` is not a public destination, or None if it is."""
    if isinstance(ip, ipaddress.IPv6Address):
        # Addresses that embed an IPv4 one are judged by it.
        embedded = ip.ipv4_mapped or ip.sixtofour
        if embedded is None and ip in _NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None:
            return blocked_reason(embedded)
    if ip in METADATA_ADDRESSES:
        return "cloud metadata"
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link-local"
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_multicast:
        return "multicast"
    if isinstance(ip, ipaddress.IPv4Address) and ip in _CGNAT:
        return "carrier-grade NAT"
    if ip.is_private:
        return "private"
    if ip.is_reserved:
        return "reserved"
    if not ip.is_global:
        return "not publicly routable"
    return None


def _normalise_host(host: str) -> str:
    host = host.strip().lower().rstrip(".")
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


async def _getaddrinfo(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (module-level so tests can stand in for DNS)."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    # Scope ids ("fe80::1%eth0") are not part of the address.
    return list(dict.fromkeys(info[4][0].split("%", 1)[0] for info in infos))


async def _resolve(host: str, port: int) -> list[str]:
    try:
        return [str(ipaddress.ip_address(host))]
    except ValueError:
        pass
    try:
        addresses = await _getaddrinfo(host, port)
    except (socket.gaierror, UnicodeError) as exc:
        raise OutboundError(ErrorCode.NETWORK_ERROR, f"cannot resolve {host}: {exc}", reason="dns_failure",
                            retryable=True, details={"host": host}) from exc
    if not addresses:
        raise OutboundError(ErrorCode.NETWORK_ERROR, f"{host} has no address", reason="dns_failure",
                            retryable=True, details={"host": host})
    return addresses


def _vet_addresses(host: str, addresses: list[str], allow: _Allowlist) -> None:
    for text in addresses:
        ip = ipaddress.ip_address(text)
        why = blocked_reason(ip)
        if why and not allow.admits_address(ip, exact_only=why == "cloud metadata"):
            raise _refused(host, f"resolves to {why} address {text}")


async def vet_host(host: str, port: int) -> list[str]:
    """Resolve ``host`` once and return the addresses a connection may use; raise if
    any of them is refused. An allow-listed host name skips the address check."""
    name = _normalise_host(host)
    allow = _allowlist()
    if allow.admits_name(name):
        return await _resolve(name, port)
    if name in METADATA_HOSTS or name.endswith(".metadata.google.internal"):
        raise _refused(name, "cloud metadata host")
    addresses = await _resolve(name, port)
    _vet_addresses(name, addresses, allow)
    return addresses


def _check_form(url: httpx.URL) -> None:
    if url.scheme not in ("http", "https"):
        raise _refused(str(url.host or url), f"scheme {url.scheme or 'missing'!r} is not http or https")
    if not url.host:
        raise _refused(str(url), "no host")


async def check_url(url: str, *, field: str | None = None) -> None:
    """Vet a URL an administrator or user configures (tool endpoint, webhook) at
    save time, without sending anything. Raises VAL_001 (with ``field``) when
    the scheme is not http(s), the host is a refused literal address or a
    metadata name, or it resolves to a refused address. A name that does not
    resolve right now is accepted: it is checked again on every send."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError) as exc:
        raise OutboundError(ErrorCode.VALIDATION_ERROR, f"not a valid URL: {exc}", reason="invalid_url",
                            field=field) from exc
    try:
        _check_form(parsed)
        await asyncio.wait_for(vet_host(parsed.host, parsed.port or (443 if parsed.scheme == "https" else 80)),
                               timeout=5)
    except OutboundError as exc:
        if exc.reason == "dns_failure":
            return
        raise OutboundError(ErrorCode.VALIDATION_ERROR, exc.message, reason=exc.reason,
                            details={k: v for k, v in exc.details.items() if k != "reason"}, field=field) from exc
    except TimeoutError:
        return  # slow DNS at save time: the send-time check still applies


# ---- the guarded connection layer --------------------------------------------------------------

def _guarded_backend_class(core: ModuleType) -> type:
    """A network backend for ``core`` (httpcore, or the SDKs' httpcore2) that vets
    the destination and connects only to a vetted address."""

    class GuardedBackend(core.AsyncNetworkBackend):  # type: ignore[name-defined,misc]
        def __init__(self) -> None:
            self._inner = core.AnyIOBackend()

        # httpcore's interface names the parameter ``timeout``.
        async def connect_tcp(self, host: str, port: int, timeout: float | None = None,  # noqa: ASYNC109
                              local_address: str | None = None, socket_options: Any = None) -> Any:
            addresses = await vet_host(host, port)
            last_error: Exception | None = None
            for address in addresses:
                try:
                    return await self._inner.connect_tcp(address, port, timeout=timeout,
                                                         local_address=local_address,
                                                         socket_options=socket_options)
                except core.ConnectError as exc:
                    last_error = exc
            assert last_error is not None  # vet_host never returns an empty list
            raise last_error

        async def connect_unix_socket(self, path: str, timeout: float | None = None,  # noqa: ASYNC109
                                      socket_options: Any = None) -> Any:
            raise _refused(path, "unix sockets are not an outbound destination")

        async def sleep(self, seconds: float) -> None:
            await self._inner.sleep(seconds)

    return GuardedBackend


@lru_cache(maxsize=4)
def _ssl_context(http: ModuleType) -> ssl.SSLContext:
    # Loading the CA bundle costs milliseconds: once per process.
    return http.create_ssl_context(trust_env=False)


def guarded_transport(http: ModuleType = httpx) -> Any:
    """An ``AsyncHTTPTransport`` of ``http`` (``httpx`` or ``httpx2``, which the
    OpenAI/Anthropic/Google SDKs use) whose every connection passes the guard.
    Never uses environment proxies: a proxy would connect on our behalf unchecked."""
    core = __import__("httpcore2" if http.__name__ == "httpx2" else "httpcore")
    context = _ssl_context(http)
    transport = http.AsyncHTTPTransport(verify=context, trust_env=False)
    # The transport has no network_backend argument; its pool is the documented
    # httpcore extension point, rebuilt with the same settings plus the guard.
    transport._pool = core.AsyncConnectionPool(ssl_context=context, network_backend=_guarded_backend_class(core)())
    return transport


# ---- the client --------------------------------------------------------------------------------

def _timeout_seconds(timeout: float | None) -> float:
    if timeout is not None and timeout > 0:
        return float(timeout)
    return get_settings().outbound_timeout.total_seconds()


async def _read_capped(response: httpx.Response, cap: int) -> bytes:
    declared = response.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > cap:
        raise _too_large(str(response.url), cap)
    chunks: list[bytes] = []
    size = 0
    # Decoded bytes are counted, so a compressed bomb is stopped too.
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > cap:
            raise _too_large(str(response.url), cap)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(url: str, cap: int) -> OutboundError:
    return OutboundError(ErrorCode.TOOL_ERROR, f"response from {url} exceeds {cap} bytes",
                         reason="response_too_large", details={"maxBytes": cap})


def _redirect_request(client: httpx.AsyncClient, request: httpx.Request, response: httpx.Response) -> httpx.Request:
    try:
        target = request.url.join(response.headers["location"])
    except (httpx.InvalidURL, ValueError) as exc:
        raise OutboundError(ErrorCode.EXTERNAL_SERVICE_ERROR, f"invalid redirect location: {exc}",
                            reason="invalid_redirect") from exc
    method = request.method
    keep_body = True
    # Browsers' (and RFC 9110's) rules: 303 becomes GET; 301/302 turn POST into GET.
    if (response.status_code == 303 and method != "HEAD") or (response.status_code in (301, 302)
                                                                and method == "POST"):
        method, keep_body = "GET", False
    headers = {k: v for k, v in request.headers.items() if k.lower() not in _REDIRECT_DROP_HEADERS}
    if not keep_body:
        headers = {k: v for k, v in headers.items() if k.lower() != "content-type"}
    same_origin = (target.scheme, target.host, target.port) == (request.url.scheme, request.url.host,
                                                                request.url.port)
    if not same_origin:
        headers = {k: v for k, v in headers.items() if k.lower() not in _CROSS_ORIGIN_DROP_HEADERS}
    return client.build_request(method, target, headers=headers, content=request.content if keep_body else None)


def _status_error(response: OutboundResponse) -> OutboundError | None:
    status = response.status
    if status < 400:
        return None
    details = {"status": status, "body": response.text[:500]}
    if status == 429:
        return OutboundError(ErrorCode.RATE_LIMIT_EXCEEDED, f"{response.final_url} answered 429",
                             reason="upstream_rate_limited", retryable=True, details=details)
    return OutboundError(ErrorCode.EXTERNAL_SERVICE_ERROR, f"{response.final_url} answered {status}",
                         reason="upstream_error", retryable=status >= 500, details=details)


async def request(method: str, url: str, *, headers: Mapping[str, str] | None = None, json: Any = None,
                  content: bytes | str | None = None, params: Mapping[str, Any] | None = None,
                  timeout: float | None = None, max_bytes: int | None = None,  # noqa: ASYNC109 (the contract)
                  idempotency_key: str | None = None, follow_redirects: bool = True,
                  raise_for_status: bool = False) -> OutboundResponse:
    """Send one request through the guard. ``timeout`` (seconds) bounds the whole
    exchange, redirects and body included (default ``outbound_timeout``);
    ``max_bytes`` caps the decoded body (default ``outbound_max_bytes``);
    ``idempotency_key`` is sent as ``Idempotency-Key`` on every hop so receivers
    can drop duplicates of a retried side effect."""
    total = _timeout_seconds(timeout)
    cap = max_bytes if max_bytes is not None and max_bytes > 0 else get_settings().outbound_max_bytes
    send_headers = dict(headers or {})
    if idempotency_key:
        send_headers[IDEMPOTENCY_HEADER] = idempotency_key
    started = time.perf_counter()
    hops: list[str] = []
    try:
        async with asyncio.timeout(total), httpx.AsyncClient(
                transport=guarded_transport(), timeout=httpx.Timeout(total), follow_redirects=False,
                trust_env=False) as client:
            try:
                outgoing = client.build_request(method.upper(), url, headers=send_headers, json=json,
                                                content=content, params=params)
            except (httpx.InvalidURL, httpx.UnsupportedProtocol, TypeError, ValueError) as exc:
                raise OutboundError(ErrorCode.VALIDATION_ERROR, f"not a valid URL: {exc}",
                                    reason="invalid_url") from exc
            while True:
                _check_form(outgoing.url)
                response = await client.send(outgoing, stream=True)
                try:
                    if follow_redirects and response.is_redirect:
                        if len(hops) >= MAX_REDIRECTS:
                            raise OutboundError(ErrorCode.TOOL_ERROR, f"more than {MAX_REDIRECTS} redirects",
                                                reason="too_many_redirects", details={"redirects": hops})
                        outgoing = _redirect_request(client, outgoing, response)
                        hops.append(str(outgoing.url))
                        continue
                    body = await _read_capped(response, cap)
                finally:
                    await response.aclose()
                break
    except OutboundError:
        raise
    except (TimeoutError, httpx.TimeoutException) as exc:
        raise OutboundError(ErrorCode.TIMEOUT_ERROR, f"{method.upper()} {url} timed out after {total:g}s",
                            reason="timeout", retryable=True) from exc
    except httpx.HTTPError as exc:
        raise OutboundError(ErrorCode.NETWORK_ERROR, f"{method.upper()} {url} failed: {exc!s}" if str(exc)
                            else f"{method.upper()} {url} failed: {type(exc).__name__}",
                            reason="network", retryable=True) from exc
    except OSError as exc:
        raise OutboundError(ErrorCode.NETWORK_ERROR, f"{method.upper()} {url} failed: {exc}",
                            reason="network", retryable=True) from exc
    result = OutboundResponse(status=response.status_code,
                              headers={k.lower(): v for k, v in response.headers.items()},
                              body=body, elapsed_ms=(time.perf_counter() - started) * 1000,
                              final_url=str(response.url), redirects=hops)
    if raise_for_status and (error := _status_error(result)):
        raise error
    return result
