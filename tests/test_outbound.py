"""The outbound guard against real local HTTP servers (no Ray needed)."""

from __future__ import annotations

import asyncio
import ipaddress
import pickle
import time

import httpcore
import pytest
from aiohttp import web

from tests.utils.stub_http import StubServer, closed_port
from troupe.config import get_settings
from troupe.infra import outbound
from troupe.infra.outbound import OutboundError


@pytest.fixture(autouse=True)
def only_loopback_connections(monkeypatch):
    """Safety net and proof: no test here may open a connection to anything but
    loopback, so a refused destination is refused before any packet leaves."""
    original = httpcore.AnyIOBackend.connect_tcp
    attempts: list[str] = []

    async def connect(self, host, port, *args, **kwargs):
        attempts.append(host)
        assert ipaddress.ip_address(host).is_loopback, f"connection attempted to {host}"
        return await original(self, host, port, *args, **kwargs)

    monkeypatch.setattr(httpcore.AnyIOBackend, "connect_tcp", connect)
    return attempts


@pytest.fixture
def allow(monkeypatch):
    def set_allowlist(*entries: str) -> None:
        monkeypatch.setattr(get_settings(), "outbound_allowlist", list(entries))

    set_allowlist()
    return set_allowlist


async def _json(request: web.Request) -> web.Response:
    return web.json_response({"ok": True, "method": request.method, "host": request.headers.get("Host")})


async def _slow(request: web.Request) -> web.Response:
    await asyncio.sleep(3)
    return web.json_response({"late": True})


async def _big(request: web.Request) -> web.Response:
    return web.Response(body=b"x" * 5000)


async def _big_chunked(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse()
    response.enable_chunked_encoding()
    await response.prepare(request)
    for _ in range(50):
        await response.write(b"y" * 1000)
    await response.write_eof()
    return response


def _redirect_to(location: str, status: int = 302):
    async def handler(request: web.Request) -> web.Response:
        return web.Response(status=status, headers={"Location": location})
    return handler


def _status(code: int):
    async def handler(request: web.Request) -> web.Response:
        return web.json_response({"error": "nope"}, status=code)
    return handler


@pytest.fixture
async def stub():
    server = StubServer()
    server.route("*", "/json", _json)
    server.route("GET", "/slow", _slow)
    server.route("GET", "/big", _big)
    server.route("GET", "/big-chunked", _big_chunked)
    server.route("GET", "/to-private", _redirect_to("http://10.0.0.5/steal"))
    server.route("GET", "/to-metadata", _redirect_to("http://169.254.169.254/latest/meta-data/"))
    server.route("GET", "/loop", _redirect_to("/loop"))
    server.route("*", "/see-other", _redirect_to("/json", 303))
    server.route("*", "/temporary", _redirect_to("/json", 307))
    server.route("GET", "/hop1", _redirect_to("/hop2"))
    server.route("GET", "/hop2", _redirect_to("/json", 301))
    server.route("GET", "/e500", _status(500))
    server.route("GET", "/e429", _status(429))
    server.route("GET", "/e404", _status(404))
    await server.start()
    yield server
    await server.stop()


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:{port}/json",
    "http://localhost:{port}/json",
    "http://LOCALHOST.:{port}/json",
    "http://[::1]:{port}/json",
    "http://[::ffff:127.0.0.1]:{port}/json",
    "http://2130706433:{port}/json",  # 127.0.0.1 as one decimal number
    "http://10.1.2.3/",
    "http://172.16.0.1/",
    "http://192.168.1.1/",
    "http://169.254.169.254/latest/meta-data/",
    "http://[fe80::1]/",
    "http://[fd00:ec2::254]/",
    "http://100.64.0.1/",
    "http://0.0.0.0:{port}/",
    "http://224.0.0.1/",
    "http://metadata.google.internal/computeMetadata/v1/",
])
async def test_refused_destinations(stub, allow, url, only_loopback_connections):
    with pytest.raises(OutboundError) as caught:
        await outbound.request("GET", url.format(port=stub.port))
    assert caught.value.code == "BIZ_003"
    assert caught.value.reason == "destination_not_allowed"
    assert caught.value.retryable is False
    assert stub.received == [] and only_loopback_connections == []


async def test_non_http_schemes_refused(allow):
    for url in ("ftp://example.com/x", "file:///etc/passwd", "gopher://example.com/"):
        with pytest.raises(OutboundError) as caught:
            await outbound.request("GET", url)
        assert caught.value.code == "BIZ_003"


async def test_allowlisted_address_is_reached(stub, allow):
    allow("127.0.0.1")
    response = await outbound.request("POST", f"{stub.url}/json", json={"a": 1}, headers={"X-Trace": "t1"},
                                      params={"q": "v"})
    assert response.status == 200
    assert response.json()["method"] == "POST"
    assert response.headers["content-type"].startswith("application/json")
    assert response.final_url == f"{stub.url}/json?q=v"
    assert response.elapsed_ms > 0 and response.redirects == []
    sent = stub.received[-1]
    assert sent.json() == {"a": 1} and sent.query == {"q": "v"} and sent.headers["x-trace"] == "t1"


async def test_allowlisted_cidr_and_hostname(stub, allow):
    allow("127.0.0.0/8")
    assert (await outbound.request("GET", f"{stub.url}/json")).status == 200
    allow("localhost")
    assert (await outbound.request("GET", f"http://localhost:{stub.port}/json")).status == 200
    # The name is trusted, not the address behind it.
    with pytest.raises(OutboundError):
        await outbound.request("GET", f"{stub.url}/json")


async def test_metadata_needs_an_exact_entry(allow):
    allow("169.254.0.0/16")
    with pytest.raises(OutboundError) as caught:
        await outbound.vet_host("169.254.169.254", 80)
    assert "cloud metadata" in caught.value.message
    # Other link-local addresses are admitted by the covering CIDR (checked without connecting).
    assert await outbound.vet_host("169.254.10.10", 80) == ["169.254.10.10"]
    allow("169.254.169.254/32")
    assert await outbound.vet_host("169.254.169.254", 80) == ["169.254.169.254"]


async def test_hostname_resolving_to_loopback_is_refused_and_pinned_when_allowed(stub, allow, monkeypatch):
    answers = {"intranet.test": ["127.0.0.1"], "mixed.test": ["127.0.0.1", "10.0.0.7"]}

    async def fake_dns(host: str, port: int) -> list[str]:
        return answers[host]

    monkeypatch.setattr(outbound, "_getaddrinfo", fake_dns)
    with pytest.raises(OutboundError) as caught:
        await outbound.request("GET", f"http://intranet.test:{stub.port}/json")
    assert "loopback" in caught.value.message and stub.received == []

    allow("127.0.0.0/8")
    response = await outbound.request("GET", f"http://intranet.test:{stub.port}/json")
    # Connected to the vetted IP, while the Host header keeps the name.
    assert response.json()["host"] == f"intranet.test:{stub.port}"
    # Any refused address in the answer refuses the host.
    with pytest.raises(OutboundError) as caught:
        await outbound.request("GET", f"http://mixed.test:{stub.port}/json")
    assert "10.0.0.7" in caught.value.message


async def test_rebinding_after_save_time_check_is_caught_at_send_time(stub, allow, monkeypatch):
    answers = iter([["93.184.216.34"], ["127.0.0.1"]])

    async def rebinding_dns(host: str, port: int) -> list[str]:
        return next(answers)

    monkeypatch.setattr(outbound, "_getaddrinfo", rebinding_dns)
    await outbound.check_url(f"http://rebind.test:{stub.port}/json")  # public at save time
    with pytest.raises(OutboundError) as caught:
        await outbound.request("GET", f"http://rebind.test:{stub.port}/json")
    assert caught.value.reason == "destination_not_allowed" and stub.received == []


@pytest.mark.parametrize("path", ["/to-private", "/to-metadata"])
async def test_redirect_to_blocked_address_is_refused(stub, allow, path, only_loopback_connections):
    allow("127.0.0.1")
    with pytest.raises(OutboundError) as caught:
        await outbound.request("GET", f"{stub.url}{path}")
    assert caught.value.reason == "destination_not_allowed"
    assert [r.path for r in stub.received] == [path]
    assert set(only_loopback_connections) == {"127.0.0.1"}


async def test_redirect_to_unlisted_loopback_name_is_refused(stub, allow):
    allow("127.0.0.1")
    stub_redirect = StubServer()
    stub_redirect.route("GET", "/go", _redirect_to(f"http://[::1]:{stub.port}/json"))
    await stub_redirect.start()
    try:
        with pytest.raises(OutboundError) as caught:
            await outbound.request("GET", f"{stub_redirect.url}/go")
        assert "::1" in caught.value.message
    finally:
        await stub_redirect.stop()


async def test_redirects_followed_and_rechecked(stub, allow):
    allow("127.0.0.1")
    response = await outbound.request("GET", f"{stub.url}/hop1")
    assert response.status == 200 and response.final_url == f"{stub.url}/json"
    assert response.redirects == [f"{stub.url}/hop2", f"{stub.url}/json"]
    # 303 turns POST into GET without the body; 307 keeps method and body.
    see_other = await outbound.request("POST", f"{stub.url}/see-other", json={"x": 1})
    assert see_other.json()["method"] == "GET" and stub.received[-1].body == b""
    temporary = await outbound.request("POST", f"{stub.url}/temporary", json={"x": 2}, idempotency_key="run-1:n:0")
    assert temporary.json()["method"] == "POST" and stub.received[-1].json() == {"x": 2}
    assert [r.headers.get("idempotency-key") for r in stub.received[-2:]] == ["run-1:n:0", "run-1:n:0"]
    # Not following: the redirect itself is the answer.
    raw = await outbound.request("GET", f"{stub.url}/hop1", follow_redirects=False)
    assert raw.status == 302 and raw.headers["location"] == "/hop2"


async def test_cross_origin_redirect_drops_credentials(stub, allow):
    allow("127.0.0.1", "localhost")
    origin = StubServer()
    origin.route("GET", "/go", _redirect_to(f"http://localhost:{stub.port}/json", 307))
    await origin.start()
    try:
        await outbound.request("GET", f"{origin.url}/go", headers={"Authorization": "Bearer secret", "X-Keep": "1"})
    finally:
        await origin.stop()
    final = stub.received[-1]
    assert "authorization" not in final.headers and final.headers["x-keep"] == "1"


async def test_redirect_loop_stops(stub, allow):
    allow("127.0.0.1")
    with pytest.raises(OutboundError) as caught:
        await outbound.request("GET", f"{stub.url}/loop")
    assert caught.value.reason == "too_many_redirects"
    assert len(stub.received) == outbound.MAX_REDIRECTS + 1


@pytest.mark.parametrize("path", ["/big", "/big-chunked"])
async def test_size_cap(stub, allow, path):
    allow("127.0.0.1")
    with pytest.raises(OutboundError) as caught:
        await outbound.request("GET", f"{stub.url}{path}", max_bytes=1000)
    assert caught.value.code == "BIZ_003" and caught.value.reason == "response_too_large"
    assert len((await outbound.request("GET", f"{stub.url}{path}", max_bytes=100_000)).body) >= 5000


async def test_timeout(stub, allow):
    allow("127.0.0.1")
    started = time.perf_counter()
    with pytest.raises(OutboundError) as caught:
        await outbound.request("GET", f"{stub.url}/slow", timeout=0.3)
    assert caught.value.code == "SYS_006" and caught.value.retryable
    assert time.perf_counter() - started < 2


async def test_network_error(allow):
    allow("127.0.0.1")
    with pytest.raises(OutboundError) as caught:
        await outbound.request("GET", f"http://127.0.0.1:{closed_port()}/")
    assert caught.value.code == "SYS_007" and caught.value.retryable


async def test_status_errors_only_when_asked(stub, allow):
    allow("127.0.0.1")
    assert (await outbound.request("GET", f"{stub.url}/e500")).status == 500
    expected = {"/e500": ("SYS_003", True), "/e429": ("SYS_004", True), "/e404": ("SYS_003", False)}
    for path, (code, retryable) in expected.items():
        with pytest.raises(OutboundError) as caught:
            await outbound.request("GET", f"{stub.url}{path}", raise_for_status=True)
        assert (caught.value.code, caught.value.retryable) == (code, retryable)
        assert caught.value.details["status"] == int(path[2:])


async def test_check_url(allow, monkeypatch):
    await outbound.check_url("https://api.example.com/hook")  # public or unresolvable here: accepted
    for url in ("http://192.168.0.10/hook", "http://localhost:8080/", "ftp://example.com/",
                "http://metadata.google.internal/"):
        with pytest.raises(OutboundError) as caught:
            await outbound.check_url(url, field="endpoint")
        assert caught.value.code == "VAL_001" and caught.value.field == "endpoint"
        assert caught.value.status == 422
    allow("192.168.0.0/16")
    await outbound.check_url("http://192.168.0.10/hook")


def test_error_survives_pickling():
    error = OutboundError(outbound.ErrorCode.TIMEOUT_ERROR, "slow", reason="timeout", retryable=True,
                          details={"url": "u"})
    copy = pickle.loads(pickle.dumps(error))
    assert isinstance(copy, OutboundError)
    assert (copy.code, copy.reason, copy.retryable, copy.details) == ("SYS_006", "timeout", True,
                                                                      {"reason": "timeout", "url": "u"})
