"""Agent routes over real HTTP: validation, versioning, performance from inserted rows,
clone, publish/unpublish, reviews."""

from __future__ import annotations

import uuid
from datetime import timedelta

from tests.utils.ca_helpers import insert_execution, insert_task, insert_tool, make_agent, make_company
from tests.utils.fixtures import assert_error, assert_ok
from troupe.timeutil import utcnow


async def test_create_defaults_and_known_context_window(client, user):
    agent = await make_agent(client, user, model="gpt-4o", provider="openai", tags=["research"])
    c = agent["configuration"]
    assert c["contextWindow"] == 128000 and c["temperature"] == 0.7 and c["topP"] == 1.0
    assert c["safety"]["contentFilter"] is True and c["knowledgeBase"]["updateFrequency"] == "daily"
    assert agent["version"] == "1.0.0" and agent["createdBy"] == user.id and agent["isPublic"] is False
    assert agent["rating"] == 0 and agent["status"] == "idle"
    # A new agent has the spec's AgentPerformance with zeros and zero-filled trends, and no reviews.
    p = agent["performance"]
    assert (p["totalRequests"], p["errorRate"], p["costPerRequest"], p["popularityScore"]) == (0, 0, 0, 0)
    assert p["lastUsedAt"] is None and p["satisfactionScore"] is None
    assert [len(p["trends"][k]) for k in ("daily", "weekly", "monthly")] == [7, 4, 12]
    assert all(m["requests"] == 0 for k in ("daily", "weekly", "monthly") for m in p["trends"][k])
    assert agent["reviews"] == [] and agent["reviewCount"] == 0
    sim = await make_agent(client, user)
    assert sim["configuration"]["contextWindow"] == 32768


async def test_create_rejects_bad_configuration(client, user, other_user):
    h = user.headers
    base = {"name": "A", "description": "d", "type": "technical", "model": "gpt-4o", "provider": "openai"}
    cases = [
        ({**base, "type": "robot"}, "type"),
        ({**base, "provider": "acme"}, "provider"),
        ({**base, "configuration": {"temperature": 2.5}}, "configuration.temperature"),
        ({**base, "configuration": {"temperature": -0.1}}, "configuration.temperature"),
        ({**base, "configuration": {"topP": 1.5}}, "configuration.topP"),
        ({**base, "configuration": {"maxTokens": 0}}, "configuration.maxTokens"),
        ({**base, "configuration": {"maxTokens": "many"}}, "configuration.maxTokens"),
        ({**base, "configuration": {"responseFormat": "xml"}}, "configuration.responseFormat"),
        ({**base, "configuration": {"tools": ["not-a-uuid"]}}, "configuration.tools.0"),
        ({**base, "configuration": {"stopSequences": ["x"] * 17}}, "configuration.stopSequences"),
        ({**base, "configuration": {"safety": {"toxicityThreshold": 3}}}, "configuration.safety.toxicityThreshold"),
        ({**base, "name": "n" * 256}, "name"),
        ({**base, "rating": 5}, "rating"),
        ({**base, "createdBy": other_user.id}, "createdBy"),
        ({**base, "version": "9.9.9"}, "version"),
        ({**base, "performance": {}}, "performance"),
        ({**base, "capabilities": ["c"] * 51}, "capabilities"),
    ]
    for body, field in cases:
        resp = await client.post("/api/agents", json=body, headers=h)
        err = resp.json()["error"]
        assert resp.status_code == 422 and err["code"] in ("VAL_001", "VAL_003"), resp.text
        assert err["field"] == field, (field, err)
    # cross-field rules
    assert_error(await client.post("/api/agents", json={**base, "configuration": {"contextWindow": 200000}},
                                   headers=h), 422, "VAL_001", field="configuration.contextWindow")
    assert_error(await client.post("/api/agents", json={**base, "configuration": {"maxTokens": 5000,
                                                                                 "contextWindow": 4000}},
                                   headers=h), 422, "VAL_001", field="configuration.maxTokens")
    # tools must exist and be visible
    assert_error(await client.post("/api/agents", json={**base, "configuration": {"tools": [str(uuid.uuid4())]}},
                                   headers=h), 404, "RES_001", field="configuration.tools")
    hidden = await insert_tool(other_user.id)
    assert_error(await client.post("/api/agents", json={**base, "configuration": {"tools": [hidden]}}, headers=h),
                 404, "RES_001")
    public = await insert_tool(other_user.id, public=True)
    ok_agent = assert_ok(await client.post("/api/agents", json={**base, "configuration": {"tools": [public]}},
                                           headers=h), 201)
    assert ok_agent["configuration"]["tools"] == [public]
    # company must be writable and have room; publishing on create needs agents:publish
    theirs = await make_company(client, other_user)
    assert_error(await client.post("/api/agents", json={**base, "companyId": theirs["id"]}, headers=h), 404,
                 "RES_001", field="companyId")
    full = await make_company(client, user, settings={"maxAgents": 1})
    await make_agent(client, user, companyId=full["id"])
    assert_error(await client.post("/api/agents", json={**base, "companyId": full["id"]}, headers=h), 409, "RES_004")
    # publishing one's own agent at creation is allowed (ownership grants agents:publish)
    assert assert_ok(await client.post("/api/agents", json={**base, "isPublic": True}, headers=h), 201)["isPublic"]


async def test_list_filters(client, user, user_factory):
    me = await user_factory("user")
    company = await make_company(client, me)
    tag = uuid.uuid4().hex[:6]
    a = await make_agent(client, me, name=f"Writer {tag}", type="creative", tags=[tag], companyId=company["id"])
    b = await make_agent(client, me, name=f"Analyst {tag}", type="analytical", tags=[tag], model="gpt-4o",
                         provider="openai", description="crunches spreadsheets")

    async def ids(**params):
        return [x["id"] for x in assert_ok(await client.get("/api/agents", params=params, headers=me.headers))]

    assert set(await ids(tags=tag)) == {a["id"], b["id"]}
    assert await ids(tags=tag, type="creative") == [a["id"]]
    assert await ids(companyId=company["id"]) == [a["id"]]
    assert await ids(tags=tag, provider="openai") == [b["id"]]
    assert await ids(search="spreadsheets") == [b["id"]]
    assert await ids(search="Writ", createdBy=me.id) == [a["id"]]
    assert await ids(tags=tag, isPublic="true") == []
    assert await ids(tags=tag, sort="name", order="asc") == [b["id"], a["id"]]
    resp = await client.get("/api/agents", params={"tags": tag, "limit": 1}, headers=me.headers)
    assert resp.json()["pagination"]["total"] == 2 and resp.json()["pagination"]["hasNext"] is True
    for params in ({"limit": 0}, {"sort": "secret"}, {"provider": "acme"}, {"status": "sleeping"},
                   {"companyId": "zzz"}, {"isPublic": "maybe"}):
        resp = await client.get("/api/agents", params=params, headers=me.headers)
        assert resp.status_code == 422 and resp.json()["error"]["code"].startswith("VAL_")


async def test_update_bumps_version_only_on_behaviour_change(client, user, other_user):
    agent = await make_agent(client, user)
    aid, h = agent["id"], user.headers
    data = assert_ok(await client.put(f"/api/agents/{aid}", json={"name": "Renamed", "tags": ["x"]}, headers=h))
    assert data["version"] == "1.0.0" and data["name"] == "Renamed"
    data = assert_ok(await client.put(f"/api/agents/{aid}", json={"configuration": {"temperature": 0.1}},
                                      headers=h))
    assert data["version"] == "1.0.1" and data["configuration"]["temperature"] == 0.1
    assert data["configuration"]["topP"] == 1.0  # the rest of the configuration is kept
    data = assert_ok(await client.put(f"/api/agents/{aid}", json={"configuration": {"temperature": 0.1}},
                                      headers=h))
    assert data["version"] == "1.0.1"  # same value: no change
    data = assert_ok(await client.put(f"/api/agents/{aid}", json={"model": "gpt-4o", "provider": "openai"},
                                      headers=h))
    assert data["version"] == "1.0.2"
    assert_error(await client.put(f"/api/agents/{aid}", json={"configuration": {"maxTokens": 99999}}, headers=h),
                 422, "VAL_001", field="configuration.maxTokens")
    # Server-owned fields (as a GET answers them) are ignored, never applied; unknown ones are refused.
    kept = assert_ok(await client.put(f"/api/agents/{aid}", json={"isPublic": True, "rating": 5}, headers=h))
    assert kept["isPublic"] is False and kept["rating"] == 0
    assert_error(await client.put(f"/api/agents/{aid}", json={"bogus": 5}, headers=h), 422, "VAL_001")
    assert_error(await client.put(f"/api/agents/{aid}", json={"configuration": {"topP": 2}}, headers=h), 422,
                 "VAL_001")
    company = await make_company(client, user)
    moved = assert_ok(await client.put(f"/api/agents/{aid}", json={"companyId": company["id"]}, headers=h))
    assert moved["companyId"] == company["id"]
    theirs = await make_company(client, other_user)
    assert_error(await client.put(f"/api/agents/{aid}", json={"companyId": theirs["id"]}, headers=h), 404,
                 "RES_001")
    assert_error(await client.put(f"/api/agents/{uuid.uuid4()}", json={"name": "x"}, headers=h), 404, "RES_001")


async def test_delete_and_in_use(client, user, admin):
    company = await make_company(client, user)
    agent = await make_agent(client, user, companyId=company["id"])
    task = await insert_task(company["id"], user.id, status="running", agent_id=agent["id"])
    # the creator may delete (ownership grants agents:delete), but not while the agent is in use
    assert_error(await client.delete(f"/api/agents/{agent['id']}", headers=user.headers), 409, "RES_003")
    assert_error(await client.delete(f"/api/agents/{agent['id']}", headers=admin.headers), 409, "RES_003")
    from troupe.db import models
    from troupe.db.session import session_scope

    async with session_scope() as session:
        (await session.get(models.Task, uuid.UUID(task))).status = "completed"
    assert_ok(await client.delete(f"/api/agents/{agent['id']}", headers=admin.headers))
    assert_error(await client.get(f"/api/agents/{agent['id']}", headers=user.headers), 404, "RES_001")
    assert_error(await client.delete(f"/api/agents/{agent['id']}", headers=admin.headers), 404, "RES_001")


async def test_performance_from_execution_rows(client, user):
    company = await make_company(client, user)
    agent = await make_agent(client, user, companyId=company["id"])
    aid = agent["id"]
    now = utcnow()
    t1 = await insert_task(company["id"], user.id)
    t2 = await insert_task(company["id"], user.id)
    await insert_execution(t1, agent_id=aid, status="completed", execution_time=100,
                           meta={"tokensUsed": 10, "cost": 0.01}, started_at=now)
    await insert_execution(t1, agent_id=aid, status="failed", execution_time=300,
                           meta={"tokensUsed": 30, "cost": 0.03}, started_at=now - timedelta(days=2))
    await insert_execution(t2, agent_id=aid, status="completed", execution_time=200,
                           meta={"tokensUsed": 20, "cost": 0.02}, started_at=now - timedelta(days=40))
    data = assert_ok(await client.get(f"/api/agents/{aid}/performance", headers=user.headers))
    assert (data["totalRequests"], data["successfulRequests"], data["failedRequests"]) == (3, 2, 1)
    assert data["averageResponseTime"] == 200 and data["averageTokensUsed"] == 20
    assert data["totalTokens"] == 60 and abs(data["totalCost"] - 0.06) < 1e-9
    assert data["errorRate"] == round(100 / 3, 2) and data["popularityScore"] == 2  # rates are percentages
    daily = data["trends"]["daily"]
    assert len(daily) == 30 and daily[-1]["date"] == now.date().isoformat()
    assert daily[-1]["requests"] == 1 and daily[-3]["errorRate"] == 100.0
    assert sum(p["requests"] for p in daily) == 2
    assert len(data["trends"]["monthly"]) == 12 and sum(p["requests"] for p in data["trends"]["monthly"]) == 3
    assert len(data["trends"]["weekly"]) == 12
    week = assert_ok(await client.get(f"/api/agents/{aid}/performance", params={"period": "week",
                                                                               "metrics": "daily"},
                                      headers=user.headers))
    assert week["totalRequests"] == 2 and week["trends"]["weekly"] is None
    # The agent answer embeds the same AgentPerformance (all time), with shorter trends.
    embedded = assert_ok(await client.get(f"/api/agents/{aid}", headers=user.headers))["performance"]
    assert (embedded["totalRequests"], embedded["failedRequests"], embedded["popularityScore"]) == (3, 1, 2)
    assert embedded["errorRate"] == data["errorRate"] and embedded["costPerRequest"] == data["costPerRequest"]
    assert embedded["averageTokensUsed"] == 20 and embedded["satisfactionScore"] is None
    trends = embedded["trends"]
    assert [len(trends[k]) for k in ("daily", "weekly", "monthly")] == [7, 4, 12]
    assert trends["daily"][-1]["requests"] == 1 and trends["daily"][-3]["errorRate"] == 100.0
    assert sum(p["requests"] for p in trends["monthly"]) == 3
    for params in ({"period": "year"}, {"metrics": "hourly"}):
        assert_error(await client.get(f"/api/agents/{aid}/performance", params=params, headers=user.headers),
                     422, "VAL_001")


async def test_clone(client, user, other_user, admin):
    private_tool = await insert_tool(user.id)
    agent = await make_agent(client, user, configuration={"tools": [private_tool], "temperature": 0.3})
    mine = assert_ok(await client.post(f"/api/agents/{agent['id']}/clone", json={"name": "Copy"},
                                       headers=user.headers), 201)
    assert mine["id"] != agent["id"] and mine["configuration"]["tools"] == [private_tool]
    assert mine["createdBy"] == user.id and mine["version"] == "1.0.0"
    # not visible to the other user until published
    assert_error(await client.post(f"/api/agents/{agent['id']}/clone", json={"name": "x"},
                                   headers=other_user.headers), 404, "RES_001")
    assert_ok(await client.post(f"/api/agents/{agent['id']}/publish", headers=admin.headers,
                                json={"category": "research", "documentation": "How to use it"}))
    theirs = assert_ok(await client.post(f"/api/agents/{agent['id']}/clone", json={"name": "Mine now"},
                                         headers=other_user.headers), 201)
    assert theirs["createdBy"] == other_user.id and theirs["isPublic"] is False
    assert theirs["configuration"]["tools"] == []  # the private tool is not theirs to use
    assert theirs["configuration"]["temperature"] == 0.3 and theirs["rating"] == 0
    assert_error(await client.post(f"/api/agents/{agent['id']}/clone", json={}, headers=user.headers), 422,
                 "VAL_002")


async def test_publish_unpublish_permissions(client, user, other_user, admin, viewer):
    agent = await make_agent(client, user)
    aid = agent["id"]
    body = {"category": "research", "documentation": "Docs",
            "pricing": {"model": "usage", "price": 0.01, "currency": "USD", "unit": "request"}}
    # only the creator (ownership grants agents:publish) or an admin; others can't even see a private agent
    assert_error(await client.post(f"/api/agents/{aid}/publish", json=body, headers=other_user.headers), 404,
                 "RES_001")
    assert_error(await client.post(f"/api/agents/{aid}/publish", json=body, headers=viewer.headers), 403,
                 "AUTH_004")
    for bad in ({**body, "pricing": {"model": "barter", "price": 1}}, {**body, "category": ""},
                {"category": "x"}, {**body, "pricing": {"model": "usage", "price": -1}}, {**body, "isPublic": False}):
        resp = await client.post(f"/api/agents/{aid}/publish", json=bad, headers=admin.headers)
        assert resp.status_code == 422 and resp.json()["error"]["code"].startswith("VAL_")
    data = assert_ok(await client.post(f"/api/agents/{aid}/publish", json=body, headers=admin.headers))
    assert data["isPublic"] is True and data["marketplace"]["category"] == "research"
    assert data["marketplace"]["pricing"]["price"] == 0.01
    seen = assert_ok(await client.get(f"/api/agents/{aid}", headers=other_user.headers))
    assert seen["id"] == aid
    listed = assert_ok(await client.get("/api/agents", params={"isPublic": "true", "search": agent["name"]},
                                        headers=other_user.headers))
    assert aid in [a["id"] for a in listed]
    # public: readable, never writable, by others
    assert_error(await client.put(f"/api/agents/{aid}", json={"name": "hijack"}, headers=other_user.headers), 403,
                 "AUTH_004")
    assert_error(await client.post(f"/api/agents/{aid}/unpublish", headers=other_user.headers), 403, "AUTH_004")
    data = assert_ok(await client.post(f"/api/agents/{aid}/unpublish", headers=admin.headers))
    assert data["isPublic"] is False and data["marketplace"] is None
    assert_error(await client.get(f"/api/agents/{aid}", headers=other_user.headers), 404, "RES_001")
    mine = assert_ok(await client.post(f"/api/agents/{aid}/publish", json=body, headers=user.headers))
    assert mine["isPublic"] is True
    assert_error(await client.post(f"/api/agents/{uuid.uuid4()}/publish", json=body, headers=admin.headers), 404,
                 "RES_001")


async def test_reviews(client, user, admin, user_factory):
    agent = await make_agent(client, user)
    aid = agent["id"]
    assert_ok(await client.post(f"/api/agents/{aid}/publish", headers=admin.headers,
                                json={"category": "c", "documentation": "d"}))
    r1, r2 = await user_factory("user"), await user_factory("viewer")
    assert_error(await client.post(f"/api/agents/{aid}/review", json={"rating": 5, "comment": "mine"},
                                   headers=user.headers), 403, "AUTH_004")
    first = assert_ok(await client.post(f"/api/agents/{aid}/review", json={"rating": 5, "comment": "great"},
                                        headers=r1.headers), 201)
    assert first["agentRating"] == 5 and first["reviewCount"] == 1 and first["review"]["userId"] == r1.id
    second = assert_ok(await client.post(f"/api/agents/{aid}/review", json={"rating": 2, "comment": "meh"},
                                         headers=r2.headers), 201)
    assert second["agentRating"] == 3.5
    assert_error(await client.post(f"/api/agents/{aid}/review", json={"rating": 1, "comment": "again"},
                                   headers=r1.headers), 409, "RES_002")
    for bad in ({"rating": 0, "comment": "x"}, {"rating": 6, "comment": "x"}, {"rating": "five", "comment": "x"},
                {"rating": 3, "comment": "x" * 5001}, {"comment": "x"}, {"rating": 3, "userId": r1.id}):
        resp = await client.post(f"/api/agents/{aid}/review", json=bad, headers=r2.headers)
        assert resp.status_code == 422 and resp.json()["error"]["code"].startswith("VAL_")
    agent_now = assert_ok(await client.get(f"/api/agents/{aid}", headers=user.headers))
    assert agent_now["rating"] == 3.5 and agent_now["reviewCount"] == 2
    # The spec's Agent.reviews: the newest first, in the AgentReview shape.
    assert [r["comment"] for r in agent_now["reviews"]] == ["meh", "great"]
    assert {"id", "userId", "rating", "comment", "createdAt"} <= set(agent_now["reviews"][0])
    assert agent_now["performance"]["satisfactionScore"] == 3.5
    listed = assert_ok(await client.get("/api/agents", params={"isPublic": "true", "search": agent["name"]},
                                        headers=r1.headers))
    assert [r["rating"] for r in next(a for a in listed if a["id"] == aid)["reviews"]] == [2, 5]
    resp = await client.get(f"/api/agents/{aid}/reviews", params={"sort": "rating", "order": "desc", "limit": 1},
                            headers=user.headers)
    assert resp.json()["data"][0]["rating"] == 5 and resp.json()["data"][0]["username"] == r1.username
    assert resp.json()["pagination"]["total"] == 2
    assert_error(await client.get(f"/api/agents/{aid}/reviews", params={"sort": "userId"}, headers=user.headers),
                 422, "VAL_001")
    assert_error(await client.get(f"/api/agents/{uuid.uuid4()}/reviews", headers=user.headers), 404, "RES_001")
