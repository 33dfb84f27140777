"""The response contract and health, through Serve over real HTTP."""

from __future__ import annotations

from tests.utils.fixtures import assert_error, assert_ok

SERVICES = ("database", "redis", "queue", "storage", "ai", "email")


async def test_health_reports_each_service_in_the_spec_shape(client):
    response = await client.get("/api/settings/health")
    data = assert_ok(response)
    assert data["status"] == "healthy" and data["down"] == []
    assert data["version"] and data["uptime"] >= 0 and data["timestamp"].endswith("Z")
    assert set(data["services"]) == set(SERVICES)
    for name in SERVICES:
        service = data["services"][name]
        assert service["status"] == "up" and service["lastCheck"].endswith("Z")
        # Latency, errors and findings need system:read.
        assert service["responseTime"] is None and service["error"] is None and service["details"] is None
    assert data["checks"] == []


async def test_health_details_for_system_read(client, super_admin):
    data = assert_ok(await client.get("/api/settings/health", headers=super_admin.headers))
    services = data["services"]
    assert services["queue"]["details"]["nodes"] >= 1
    assert services["database"]["details"]["serverVersion"]
    assert services["database"]["responseTime"] >= 0
    # The file storage backend is really probed; the test stack stores on local disk.
    assert services["storage"]["details"]["backend"] in ("file", "local")
    # Providers are reported as configured, never called.
    assert services["ai"]["details"]["probed"] is False and services["ai"]["details"]["providers"]["simulated"]
    # No SMTP_HOST in the test stack: mail goes to the outbox, which works but warns.
    assert services["email"]["details"]["transport"] == "outbox"
    checks = {c["name"]: c for c in data["checks"]}
    assert set(checks) == set(SERVICES)
    assert checks["database"]["status"] == "pass" and checks["database"]["duration"] >= 0
    assert checks["email"]["status"] == "warn" and "outbox" in checks["email"]["message"]
    assert all(c["timestamp"].endswith("Z") for c in checks.values())


async def test_health_storage_down_is_degraded_not_503(client, super_admin):
    """A non-critical service down: 200 with status degraded, the service down and named."""
    import os

    from troupe.infra.storage import get_storage

    root = get_storage().root  # the test process has the server's settings
    os.makedirs(root, exist_ok=True)
    aside = f"{root}.aside"
    os.rename(root, aside)
    os.close(os.open(root, os.O_CREAT | os.O_WRONLY))  # a file where the storage directory should be
    try:
        response = await client.get("/api/settings/health", headers=super_admin.headers)
        public = await client.get("/api/settings/health")
    finally:
        os.remove(root)
        os.rename(aside, root)
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert data["status"] == "degraded" and data["down"] == ["storage"]
    assert data["services"]["storage"]["status"] == "down" and data["services"]["storage"]["error"]
    assert {c["name"]: c["status"] for c in data["checks"]}["storage"] == "fail"
    assert data["services"]["database"]["status"] == "up"
    # Everyone may see that storage is down, not why.
    assert public.status_code == 200 and public.json()["data"]["status"] == "degraded"
    assert public.json()["data"]["services"]["storage"] == {
        "status": "down", "responseTime": None, "lastCheck": public.json()["data"]["services"]["storage"]["lastCheck"],
        "error": None, "details": None}
    assert assert_ok(await client.get("/api/settings/health"))["status"] == "healthy"


async def test_request_id_is_echoed_or_generated(client):
    response = await client.get("/api/settings/health", headers={"X-Request-ID": "abc-123"})
    assert response.headers["x-request-id"] == "abc-123"
    assert response.json()["meta"]["requestId"] == "abc-123"
    generated = await client.get("/api/settings/health")
    assert generated.headers["x-request-id"] == generated.json()["meta"]["requestId"]
    assert generated.headers["x-content-type-options"] == "nosniff"


async def test_unknown_route_is_enveloped_404(client):
    assert_error(await client.get("/api/no-such-thing"), 404, "RES_001")


async def test_oversize_body_is_refused(client):
    response = await client.post("/api/settings/health", content=b"x" * 300_000,
                                 headers={"content-type": "application/json"})
    assert_error(response, 413, "VAL_008")


async def test_cors_allows_configured_origin_only(client):
    good = await client.options("/api/settings/health", headers={
        "Origin": "http://localhost:3000", "Access-Control-Request-Method": "GET"})
    assert good.headers.get("access-control-allow-origin") == "http://localhost:3000"
    bad = await client.options("/api/settings/health", headers={
        "Origin": "http://evil.example", "Access-Control-Request-Method": "GET"})
    assert "access-control-allow-origin" not in bad.headers
