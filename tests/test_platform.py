"""The response contract and health, through Serve over real HTTP."""

from __future__ import annotations

from tests.utils.fixtures import assert_error, assert_ok


async def test_health_reports_each_dependency(client):
    response = await client.get("/api/settings/health")
    data = assert_ok(response)
    assert data["status"] == "healthy"
    for name in ("postgres", "redis", "ray"):
        assert data["checks"][name]["status"] == "up"
        assert data["checks"][name]["latencyMs"] >= 0
        assert data["checks"][name]["details"] is None  # details need system:read


async def test_health_details_for_system_read(client, super_admin):
    data = assert_ok(await client.get("/api/settings/health", headers=super_admin.headers))
    assert data["checks"]["ray"]["details"]["nodes"] >= 1
    assert data["checks"]["postgres"]["details"]["serverVersion"]


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
