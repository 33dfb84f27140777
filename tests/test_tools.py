"""Tools: CRUD, secrets, JSON Schema checks, lists, marketplace, installs, usage, isolation."""

from __future__ import annotations

import uuid

from tests.utils.fixtures import assert_error, assert_ok
from tests.utils.tw_helpers import fetch, make_company

SECRET = "sk-live-ABCDEF0123456789"
HEADER_SECRET = "hdr-secret-987654"


def tool_body(**overrides):
    body = {
        "name": f"Weather {uuid.uuid4().hex[:6]}",
        "description": "Current weather lookup by city",
        "type": "api",
        "category": "data",
        "configuration": {
            "endpoint": "https://api.example.com/weather",
            "method": "GET",
            "headers": {"X-Api-Key": HEADER_SECRET, "Accept": "application/json"},
            "authentication": {"type": "bearer", "credentials": {"token": SECRET}},
            "timeout": 10,
            "retries": 1,
        },
        "schema": {
            "input": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
                      "examples": [{"city": "Paris"}]},
            "output": {"type": "object", "properties": {"tempC": {"type": "number"}}},
        },
        "tags": ["weather", "geo"],
    }
    body.update(overrides)
    return body


async def create(client, who, **overrides):
    return assert_ok(await client.post("/api/tools", json=tool_body(**overrides), headers=who.headers), 201)


async def test_create_masks_and_seals_secrets(client, user):
    response = await client.post("/api/tools", json=tool_body(), headers=user.headers)
    tool = assert_ok(response, 201)
    assert SECRET not in response.text and HEADER_SECRET not in response.text
    assert tool["configuration"]["authentication"]["credentials"] == {"token": "********"}
    assert tool["configuration"]["headers"] == {"X-Api-Key": "********", "Accept": "application/json"}
    assert tool["createdBy"] == user.id and tool["version"] == "1.0.0" and tool["status"] == "active"
    assert tool["configuration"]["rateLimit"] == {"requests": 60, "window": 60}  # spec defaults filled in
    detail = await client.get(f"/api/tools/{tool['id']}", headers=user.headers)
    assert SECRET not in detail.text and HEADER_SECRET not in detail.text

    from troupe.security import SecretBox

    row = await fetch("Tool", tool["id"])
    stored = row.configuration["authentication"]["credentials"]["token"]
    assert stored != SECRET and SecretBox.is_sealed(stored)
    assert SecretBox().open(stored) == SECRET
    assert SecretBox().open(row.configuration["headers"]["X-Api-Key"]) == HEADER_SECRET
    assert row.configuration["headers"]["Accept"] == "application/json"


async def test_update_keeps_masked_secret_and_bumps_version(client, user):
    tool = await create(client, user)
    config = tool["configuration"]  # masked values sent back unchanged
    config["timeout"] = 20
    updated = assert_ok(await client.put(f"/api/tools/{tool['id']}", json={"configuration": config},
                                         headers=user.headers))
    assert updated["version"] == "1.0.1" and updated["configuration"]["timeout"] == 20
    from troupe.security import SecretBox

    row = await fetch("Tool", tool["id"])
    assert SecretBox().open(row.configuration["authentication"]["credentials"]["token"]) == SECRET
    renamed = assert_ok(await client.put(f"/api/tools/{tool['id']}", json={"name": "Renamed"}, headers=user.headers))
    assert renamed["name"] == "Renamed" and renamed["version"] == "1.0.1"  # not behaviour: no bump
    # The mask for a secret that was never stored is refused.
    config["authentication"]["credentials"] = {"other": "********"}
    assert_error(await client.put(f"/api/tools/{tool['id']}", json={"configuration": config}, headers=user.headers),
                 422, "VAL_001", field="configuration.authentication.credentials.other")


async def test_create_refuses_bad_input(client, user):
    cases = [
        ({"type": "teleporter"}, "VAL_001", "type"),
        ({"category": "misc"}, "VAL_001", "category"),
        ({"name": 42}, "VAL_003", "name"),
        ({"name": "x" * 300}, "VAL_001", "name"),
        ({"tags": [f"t{i}" for i in range(51)]}, "VAL_001", "tags"),
        ({"rating": 5}, "VAL_001", "rating"),
        ({"downloads": 100}, "VAL_001", "downloads"),
        ({"createdBy": str(uuid.uuid4())}, "VAL_001", "createdBy"),
    ]
    for override, code, field in cases:
        assert_error(await client.post("/api/tools", json=tool_body(**override), headers=user.headers), 422, code,
                     field=field)
    missing = tool_body()
    del missing["name"]
    assert_error(await client.post("/api/tools", json=missing, headers=user.headers), 422, "VAL_002", field="name")

    bad_schema = tool_body()
    bad_schema["schema"]["input"]["properties"] = {"city": {"type": "strung"}}
    assert_error(await client.post("/api/tools", json=bad_schema, headers=user.headers), 422, "VAL_001",
                 field="schema.input.properties.city.type")
    bad_schema = tool_body()
    bad_schema["schema"]["output"]["minProperties"] = -1
    assert_error(await client.post("/api/tools", json=bad_schema, headers=user.headers), 422, "VAL_001",
                 field="schema.output.minProperties")
    for endpoint in ("ftp://example.com/x", "not a url", "https://"):
        body = tool_body()
        body["configuration"]["endpoint"] = endpoint
        assert_error(await client.post("/api/tools", json=body, headers=user.headers), 422, "VAL_001",
                     field="configuration.endpoint")
    body = tool_body()
    body["configuration"]["timeout"] = 0
    assert_error(await client.post("/api/tools", json=body, headers=user.headers), 422, "VAL_001",
                 field="configuration.timeout")
    body = tool_body()
    body["configuration"]["authentication"]["type"] = "magic"
    assert_error(await client.post("/api/tools", json=body, headers=user.headers), 422, "VAL_001",
                 field="configuration.authentication.type")
    body = tool_body(pricing={"model": "free", "price": -1, "currency": "USD", "limits": {"free": 0, "paid": 0}})
    assert_error(await client.post("/api/tools", json=body, headers=user.headers), 422, "VAL_001",
                 field="pricing.price")


async def test_isolation_private_and_public(client, user, other_user, viewer, admin):
    private = await create(client, user)
    public = await create(client, user, isPublic=True)
    for path in (f"/api/tools/{private['id']}", f"/api/tools/{private['id']}/usage"):
        assert_error(await client.get(path, headers=other_user.headers), 404, "RES_001")
    assert_error(await client.put(f"/api/tools/{private['id']}", json={"name": "x"}, headers=other_user.headers),
                 404, "RES_001")
    # Public: readable, never writable, by others.
    assert assert_ok(await client.get(f"/api/tools/{public['id']}", headers=other_user.headers))["id"] == public["id"]
    assert_error(await client.put(f"/api/tools/{public['id']}", json={"name": "x"}, headers=other_user.headers),
                 403, "AUTH_004")
    assert assert_ok(await client.get(f"/api/tools/{public['id']}", headers=viewer.headers))["isPublic"] is True
    assert_error(await client.post("/api/tools", json=tool_body(), headers=viewer.headers), 403, "AUTH_004")
    # Admins see and change everything.
    assert_ok(await client.get(f"/api/tools/{private['id']}", headers=admin.headers))
    assert assert_ok(await client.put(f"/api/tools/{private['id']}", json={"status": "maintenance"},
                                      headers=admin.headers))["status"] == "maintenance"
    listed = assert_ok(await client.get("/api/tools", params={"limit": 100, "createdBy": user.id},
                                        headers=other_user.headers))
    assert {t["id"] for t in listed} == {public["id"]}
    assert_error(await client.get(f"/api/tools/{uuid.uuid4()}", headers=user.headers), 404, "RES_001")
    assert_error(await client.get("/api/tools/not-a-uuid", headers=user.headers), 422, "VAL_003")


async def test_list_filters_search_sort_and_pagination(client, user_factory):
    owner = await user_factory("user")
    a = await create(client, owner, name="Invoice parser", description="Reads PDF invoices", type="file",
                     category="productivity", tags=["pdf", "finance"])
    b = await create(client, owner, name="Slack notifier", description="Posts alerts", type="webhook",
                     category="communication", tags=["chat"], isPublic=True,
                     configuration={**tool_body()["configuration"], "webhook": {"secret": "whsec-0123456789abcdef"}})
    c = await create(client, owner, name="Sum", description="adds numbers", type="calculator", category="utility",
                     tags=["math", "finance"])
    h = owner.headers

    async def ids(**params):
        params.setdefault("createdBy", owner.id)
        return [t["id"] for t in assert_ok(await client.get("/api/tools", params=params, headers=h))]

    assert await ids(search="invoices") == [a["id"]]
    assert await ids(type="webhook") == [b["id"]]
    assert await ids(category="utility") == [c["id"]]
    assert set(await ids(tags="finance")) == {a["id"], c["id"]}
    assert await ids(tags=["finance", "math"]) == [c["id"]]
    assert await ids(isPublic="true") == [b["id"]]
    assert await ids(sort="name", order="asc") == [a["id"], b["id"], c["id"]]
    response = await client.get("/api/tools", params={"createdBy": owner.id, "limit": 2, "page": 2}, headers=h)
    body = response.json()
    assert len(body["data"]) == 1 and body["pagination"]["total"] == 3 and body["pagination"]["totalPages"] == 2
    assert_error(await client.get("/api/tools", params={"sort": "password"}, headers=h), 422, "VAL_001", field="sort")
    clamped = await client.get("/api/tools", params={"createdBy": owner.id, "limit": 101}, headers=h)
    assert clamped.status_code == 200 and clamped.json()["pagination"]["limit"] == 100
    assert_error(await client.get("/api/tools", params={"limit": 0}, headers=h), 422, "VAL_001", field="limit")
    assert_error(await client.get("/api/tools", params={"type": "bogus"}, headers=h), 422, "VAL_001", field="type")
    assert_error(await client.get("/api/tools", params={"order": "sideways"}, headers=h), 422, "VAL_001")


async def test_marketplace(client, user, other_user):
    tag = uuid.uuid4().hex[:8]
    free = await create(client, user, isPublic=True, tags=[tag], category="analysis")
    paid = await create(client, user, isPublic=True, tags=[tag], category="analysis",
                        pricing={"model": "usage", "price": 0.01, "currency": "USD", "unit": "request",
                                 "limits": {"free": 100, "paid": 10000}})
    await create(client, user, tags=[tag], category="analysis")  # private: never in the marketplace
    company = await make_company(other_user.id)
    assert_ok(await client.post(f"/api/tools/{paid['id']}/install", json={"companyId": company},
                                headers=other_user.headers), 201)

    async def ids(**params):
        data = assert_ok(await client.get("/api/tools/marketplace", params={"tags": tag, **params},
                                          headers=other_user.headers))
        return [t["id"] for t in data]

    assert set(await ids()) == {free["id"], paid["id"]}
    assert await ids(pricing="free") == [free["id"]]
    assert await ids(pricing="paid") == [paid["id"]]
    assert await ids(popular="true") == [paid["id"], free["id"]]
    assert await ids(sort="downloads", order="asc") == [free["id"], paid["id"]]
    assert await ids(rating=4) == []
    assert_error(await client.get("/api/tools/marketplace", params={"pricing": "cheap"}, headers=user.headers),
                 422, "VAL_001", field="pricing")
    assert_error(await client.get("/api/tools/marketplace", params={"rating": 6}, headers=user.headers),
                 422, "VAL_001", field="rating")
    assert_error(await client.get("/api/tools/marketplace", params={"sort": "name"}, headers=user.headers),
                 422, "VAL_001", field="sort")


async def test_install_uninstall_limits(client, user, other_user, user_factory):
    member = await user_factory("user")
    company = await make_company(user.id, settings={"maxTools": 1}, members={member.id: "member"})
    first = await create(client, user)
    second = await create(client, user, isPublic=True)
    path = f"/api/tools/{first['id']}/install"
    installed = assert_ok(await client.post(path, json={"companyId": company, "configuration": {
        "apiToken": "tok-123", "region": "eu"}}, headers=user.headers), 201)
    assert installed["downloads"] == 1 and installed["configuration"] == {"apiToken": "********", "region": "eu"}
    assert_error(await client.post(path, json={"companyId": company}, headers=user.headers), 409, "RES_002")
    assert_error(await client.post(f"/api/tools/{second['id']}/install", json={"companyId": company},
                                   headers=user.headers), 409, "RES_004")
    # A member can read the company (and now sees the private tool) but may not install into it.
    assert_ok(await client.get(f"/api/tools/{first['id']}", headers=member.headers))
    assert_error(await client.post(f"/api/tools/{first['id']}/uninstall", json={"companyId": company},
                                   headers=member.headers), 403, "AUTH_004")
    # Someone else's company is not found; an unknown tool is not found.
    assert_error(await client.post(f"/api/tools/{second['id']}/install", json={"companyId": company},
                                   headers=other_user.headers), 404, "RES_001")
    assert_error(await client.post(f"/api/tools/{uuid.uuid4()}/install", json={"companyId": company},
                                   headers=user.headers), 404, "RES_001")
    assert_error(await client.post(path, json={"companyId": "nope"}, headers=user.headers), 422, "VAL_003",
                 field="companyId")
    assert_error(await client.post(path, json={}, headers=user.headers), 422, "VAL_002", field="companyId")

    assert_ok(await client.post(f"/api/tools/{first['id']}/uninstall", json={"companyId": company},
                                headers=user.headers))
    assert_error(await client.post(f"/api/tools/{first['id']}/uninstall", json={"companyId": company},
                                   headers=user.headers), 404, "RES_001")
    assert_error(await client.get(f"/api/tools/{first['id']}", headers=member.headers), 404, "RES_001")
    assert_ok(await client.post(f"/api/tools/{second['id']}/install", json={"companyId": company},
                                headers=user.headers), 201)
    assert assert_ok(await client.get(f"/api/tools/{first['id']}", headers=user.headers))["downloads"] == 1


async def test_usage_from_tool_calls(client, user, other_user):
    from troupe.db import models
    from troupe.db.session import session_scope
    from troupe.timeutil import utcnow

    tool = await create(client, user, isPublic=True)
    mine = await make_company(user.id)
    theirs = await make_company(other_user.id)
    agent_a, agent_b = uuid.uuid4(), uuid.uuid4()
    async with session_scope() as session:
        for agent_id in (agent_a, agent_b):
            session.add(models.Agent(id=agent_id, name="a", type="custom", model="m", provider="simulated",
                                     created_by=uuid.UUID(user.id)))
        await session.flush()
        now = utcnow()
        rows = [(agent_a, mine, user.id, True, 100), (agent_a, mine, user.id, True, 300),
                (agent_a, mine, user.id, False, 200), (agent_b, theirs, other_user.id, True, 400)]
        for agent_id, company, who, success, ms in rows:
            session.add(models.ToolCall(tool_id=uuid.UUID(tool["id"]), agent_id=agent_id,
                                        company_id=uuid.UUID(company), user_id=uuid.UUID(who), success=success,
                                        duration_ms=ms, created_at=now))
    report = assert_ok(await client.get(f"/api/tools/{tool['id']}/usage", params={"groupBy": "agent"},
                                        headers=user.headers))
    assert report["scope"] == "all" and report["totalCalls"] == 4 and report["failedCalls"] == 1
    assert report["errorRate"] == 25.0 and report["averageResponseTime"] == 250
    assert len(report["series"]) == 30 and report["series"][-1]["totalCalls"] == 4
    assert report["groups"][0] == {"key": str(agent_a), "totalCalls": 3, "successfulCalls": 2, "failedCalls": 1,
                                   "errorRate": 33.33, "averageResponseTime": 200.0}
    assert report["popularAgents"][0] == str(agent_a) and report["trends"]["daily"][-1] == 4
    hourly = assert_ok(await client.get(f"/api/tools/{tool['id']}/usage", params={"period": "hour"},
                                        headers=user.headers))
    assert len(hourly["series"]) == 24 and hourly["totalCalls"] == 4
    # Another user of the public tool only sees the calls made in their own companies.
    theirs_view = assert_ok(await client.get(f"/api/tools/{tool['id']}/usage", params={"groupBy": "company"},
                                             headers=other_user.headers))
    assert theirs_view["scope"] == "yours" and theirs_view["totalCalls"] == 1
    assert [g["key"] for g in theirs_view["groups"]] == [theirs]
    detail = assert_ok(await client.get(f"/api/tools/{tool['id']}", headers=user.headers))
    assert detail["usage"]["totalCalls"] == 4 and detail["usage"]["successfulCalls"] == 3
    assert_error(await client.get(f"/api/tools/{tool['id']}/usage", params={"period": "year"},
                                  headers=user.headers), 422, "VAL_001", field="period")
    assert_error(await client.get(f"/api/tools/{tool['id']}/usage", params={"groupBy": "planet"},
                                  headers=user.headers), 422, "VAL_001", field="groupBy")


async def test_delete_rules(client, user, other_user, admin, super_admin):
    tool = await create(client, user, isPublic=True)
    # Only the creator (ownership grants tools:delete) or an admin deletes; a public tool is not others' to delete.
    assert_error(await client.delete(f"/api/tools/{tool['id']}", headers=other_user.headers), 403, "AUTH_004")
    foreign = await make_company(other_user.id)
    assert_ok(await client.post(f"/api/tools/{tool['id']}/install", json={"companyId": foreign},
                                headers=other_user.headers), 201)
    error = assert_error(await client.delete(f"/api/tools/{tool['id']}", headers=admin.headers), 409, "RES_003")
    assert error["details"] == {"installedCompanies": 1}
    assert_ok(await client.post(f"/api/tools/{tool['id']}/uninstall", json={"companyId": foreign},
                                headers=other_user.headers))
    own = await make_company(user.id)
    assert_ok(await client.post(f"/api/tools/{tool['id']}/install", json={"companyId": own},
                                headers=user.headers), 201)
    assert_ok(await client.delete(f"/api/tools/{tool['id']}", headers=super_admin.headers))
    assert_error(await client.get(f"/api/tools/{tool['id']}", headers=user.headers), 404, "RES_001")
    assert_error(await client.delete(f"/api/tools/{tool['id']}", headers=admin.headers), 404, "RES_001")
