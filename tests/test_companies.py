"""Company routes over real HTTP: happy paths, bad inputs, metrics from inserted rows."""

from __future__ import annotations

import uuid
from datetime import timedelta

from tests.utils.ca_helpers import (
    count,
    insert_execution,
    insert_log,
    insert_task,
    insert_tool,
    make_agent,
    make_company,
)
from tests.utils.fixtures import assert_error, assert_ok
from troupe.timeutil import iso, utcnow


async def test_create_merges_settings_attaches_agents_tools_and_workflow(client, user):
    agent = await make_agent(client, user)
    tool = await insert_tool(user.id)
    public_tool = await insert_tool(str((await _someone()).id), public=True)
    data = await make_company(
        client, user, description="Builds things", tags=["ai", "b2b"], agents=[agent["id"]],
        tools=[tool, public_tool], settings={"maxAgents": 3, "retryPolicy": {"maxRetries": 5}},
        workflow={"nodes": [{"id": "in", "type": "input", "position": {"x": 0, "y": 0}, "data": {"label": "In"}},
                            {"id": "a", "type": "agent", "position": {"x": 1, "y": 0},
                             "data": {"label": "A", "agentId": agent["id"]}}],
                  "edges": [{"id": "e1", "source": "in", "target": "a"}]},
        website="https://acme.example")
    assert data["ownerId"] == user.id and data["myRole"] == "owner" and data["status"] == "idle"
    s = data["settings"]
    assert s["maxAgents"] == 3 and s["maxTools"] == 20 and s["retryPolicy"]["maxRetries"] == 5
    assert s["retryPolicy"]["backoffStrategy"] == "exponential" and s["billing"]["currentUsage"] == 0
    assert [a["id"] for a in data["agents"]] == [agent["id"]]
    assert {t["id"] for t in data["tools"]} == {tool, public_tool}
    # The spec's Company: agents are Agents, tools are Tools, workflow is the Workflow with its graph.
    assert data["agents"][0]["performance"]["totalRequests"] == 0 and data["agents"][0]["reviews"] == []
    assert {t["id"]: t["installedAt"] is not None for t in data["tools"]} == {tool: True, public_tool: True}
    assert all({"configuration", "schema", "usage", "documentation", "pricing"} <= set(t) for t in data["tools"])
    assert [n["id"] for n in data["workflow"]["nodes"]] == ["in", "a"]
    assert data["workflow"]["edges"][0]["source"] == "in" and data["workflow"]["status"] == "draft"
    assert data["workflows"][0]["nodeCount"] == 2 and data["workflows"][0]["status"] == "draft"
    assert data["members"] == [{"userId": user.id, "username": user.username, "role": "owner"}]
    assert data["metrics"]["totalTasks"] == 0
    fetched = assert_ok(await client.get(f"/api/companies/{data['id']}", headers=user.headers))
    assert fetched["agentCount"] == 1 and fetched["toolCount"] == 2


async def _someone():
    from tests.utils.fixtures import create_user

    return await create_user("user")


async def test_create_rejects_bad_input(client, user, other_user):
    h = user.headers
    base = {"name": "X", "type": "software", "industry": "technology"}
    cases = [
        ({**base, "type": "spaceship"}, "type"),
        ({**base, "industry": 5}, "industry"),
        ({**base, "name": "x" * 256}, "name"),
        ({**base, "name": 123}, "name"),
        ({**base, "tags": [f"t{i}" for i in range(21)]}, "tags"),
        ({**base, "ownerId": other_user.id}, "ownerId"),
        ({**base, "settings": {"maxAgents": 0}}, "settings.maxAgents"),
        ({**base, "settings": {"visibility": "everyone"}}, "settings.visibility"),
        ({**base, "settings": {"webhookUrl": "ftp://x"}}, "settings.webhookUrl"),
        ({**base, "settings": {"security": {"ipWhitelist": ["999.1.1.1"]}}}, "settings.security.ipWhitelist.0"),
        ({**base, "settings": {"billing": {"plan": "platinum"}}}, "settings.billing.plan"),
        ({**base, "workflow": {"nodes": [{"id": "n", "type": "teleport", "position": {"x": 0, "y": 0},
                                          "data": {"label": "x"}}]}}, "workflow.nodes.0.type"),
    ]
    for body, field in cases:
        resp = await client.post("/api/companies", json=body, headers=h)
        err = resp.json()["error"]
        assert resp.status_code == 422 and err["code"] in ("VAL_001", "VAL_003"), resp.text
        assert err["field"] == field and err["details"]
    missing = assert_error(await client.post("/api/companies", json={"name": "x"}, headers=h), 422, "VAL_002")
    assert missing["field"] in ("type", "industry")
    bad_json = await client.post("/api/companies", content=b"{nope", headers={**h, "content-type": "application/json"})
    assert_error(bad_json, 422, "VAL_003")
    # retry delays must be ordered even when only one side is given
    assert_error(await client.post("/api/companies", json={**base, "settings": {"retryPolicy": {"initialDelay": 60000}}},
                                   headers=h), 422, "VAL_001")
    ghost = str(uuid.uuid4())
    assert_error(await client.post("/api/companies", json={**base, "agents": [ghost]}, headers=h), 404, "RES_001",
                 field="agents")
    assert_error(await client.post("/api/companies", json={**base, "tools": [ghost]}, headers=h), 404, "RES_001",
                 field="tools")
    agents = [(await make_agent(client, user))["id"] for _ in range(2)]
    assert_error(await client.post("/api/companies", json={**base, "agents": agents, "settings": {"maxAgents": 1}},
                                   headers=h), 409, "RES_004")
    other_private_tool = await insert_tool(other_user.id)
    assert_error(await client.post("/api/companies", json={**base, "tools": [other_private_tool]}, headers=h),
                 404, "RES_001")
    # someone else's agent, even public, can't be moved into my company
    theirs = await make_agent(client, other_user)
    assert_error(await client.post("/api/companies", json={**base, "agents": [theirs["id"]]}, headers=h),
                 404, "RES_001")
    before = await count("Company", owner_id=uuid.UUID(user.id))
    assert before == 0  # nothing half-written by any failure above
    # billing.currentUsage is server-owned: sent back as a GET answers it, it is ignored.
    created = assert_ok(await client.post("/api/companies", json={**base, "settings": {"billing": {
        "currentUsage": 5}}}, headers=h), 201)
    assert created["settings"]["billing"]["currentUsage"] == 0


async def test_list_filters_search_sort_and_pagination(client, user):
    tag = uuid.uuid4().hex[:6]
    a = await make_company(client, user, name=f"Quantum Research {tag}", type="research", industry="education",
                           tags=[tag, "science"], description="Quantum computing lab")
    b = await make_company(client, user, name=f"Bakery {tag}", type="ecommerce", industry="retail", tags=[tag])
    h = user.headers

    async def ids(**params):
        data = assert_ok(await client.get("/api/companies", params=params, headers=h))
        return [c["id"] for c in data]

    assert set(await ids(tags=tag)) == {a["id"], b["id"]}
    assert await ids(tags=tag, type="research") == [a["id"]]
    assert await ids(tags=tag, industry="retail") == [b["id"]]
    assert await ids(search="quantum computing") == [a["id"]]
    assert await ids(search="Bak") == [b["id"]]  # prefix of a word
    assert await ids(tags=tag, sort="name", order="asc") == [b["id"], a["id"]]
    assert set(await ids(ownerId=user.id)) >= {a["id"], b["id"]}
    page = await client.get("/api/companies", params={"tags": tag, "limit": 1, "page": 2}, headers=h)
    body = page.json()
    assert body["pagination"] == {"page": 2, "limit": 1, "total": 2, "totalPages": 2, "hasNext": False,
                                  "hasPrev": True}
    assert body["data"][0]["metrics"]["totalTasks"] == 0
    clamped = await client.get("/api/companies", params={"tags": tag, "limit": 101}, headers=h)
    assert clamped.status_code == 200 and clamped.json()["pagination"]["limit"] == 100
    for params in ({"limit": 0}, {"page": 0}, {"sort": "password"}, {"order": "up"}, {"type": "spaceship"},
                   {"ownerId": "nope"}, {"search": "x" * 201}):
        assert_error(await client.get("/api/companies", params=params, headers=h), 422,
                     "VAL_003" if "ownerId" in params else "VAL_001")


async def test_update_partial_settings_and_members(client, user, user_factory):
    company = await make_company(client, user, settings={"maxTools": 7})
    cid, h = company["id"], user.headers
    member, watcher = await user_factory("user"), await user_factory("user")
    data = assert_ok(await client.put(f"/api/companies/{cid}", headers=h, json={
        "description": "New", "settings": {"apiRateLimit": 50, "security": {"requireMFA": True}},
        "teamMembers": [{"userId": member.id}, {"userId": watcher.id, "role": "viewer"}]}))
    assert data["description"] == "New" and data["name"] == company["name"]
    assert data["settings"]["apiRateLimit"] == 50 and data["settings"]["maxTools"] == 7
    assert data["settings"]["security"]["requireMFA"] is True
    roles = {m["userId"]: m["role"] for m in data["members"]}
    assert roles == {user.id: "owner", member.id: "member", watcher.id: "viewer"}
    # the member now sees it with their role; the viewer reads but cannot write
    assert assert_ok(await client.get(f"/api/companies/{cid}", headers=member.headers))["myRole"] == "member"
    assert_error(await client.put(f"/api/companies/{cid}", json={"name": "x"}, headers=member.headers), 403,
                 "AUTH_004")
    data = assert_ok(await client.put(f"/api/companies/{cid}", headers=h, json={"removeMembers": [watcher.id],
                                                                                "addMembers": [{"userId": member.id,
                                                                                                "role": "viewer"}]}))
    assert {m["userId"]: m["role"] for m in data["members"]} == {user.id: "owner", member.id: "viewer"}
    assert_error(await client.put(f"/api/companies/{cid}", headers=h, json={"teamMembers": [{"userId": str(uuid.uuid4())}]}),
                 404, "RES_001", field="teamMembers")
    assert_error(await client.put(f"/api/companies/{cid}", headers=h, json={"teamMembers": [{"userId": user.id}]}),
                 422, "VAL_001", field="teamMembers")
    assert_error(await client.put(f"/api/companies/{cid}", headers=h,
                                  json={"teamMembers": [{"userId": member.id, "role": "god"}]}), 422, "VAL_001")
    # Server-owned fields are ignored (a GET answer may be sent back); unknown ones are refused.
    kept = assert_ok(await client.put(f"/api/companies/{cid}", headers=h, json={"ownerId": member.id,
                                                                               "status": "active"}))
    assert kept["ownerId"] == user.id and kept["status"] == "idle"
    assert_error(await client.put(f"/api/companies/{cid}", headers=h, json={"bogus": 1}), 422, "VAL_001")
    assert_error(await client.put(f"/api/companies/{cid}", headers=h, json={"settings": {"maxConcurrency": -1}}),
                 422, "VAL_001")
    await make_agent(client, user, companyId=cid)
    await make_agent(client, user, companyId=cid)
    assert_error(await client.put(f"/api/companies/{cid}", headers=h, json={"settings": {"maxAgents": 1}}),
                 409, "RES_004")
    assert_error(await client.put(f"/api/companies/{uuid.uuid4()}", headers=h, json={"name": "x"}), 404, "RES_001")
    assert_error(await client.put("/api/companies/not-a-uuid", headers=h, json={"name": "x"}), 404, "RES_001")


async def test_delete_refused_while_running_then_detaches_agents(client, user, admin):
    company = await make_company(client, user)
    cid = company["id"]
    agent = await make_agent(client, user, companyId=cid)
    task = await insert_task(cid, user.id, status="running", started_at=utcnow())
    # ownership grants companies:delete to the owner (rbac.OWNER_PERMISSIONS); running work still blocks it
    assert_error(await client.delete(f"/api/companies/{cid}", headers=user.headers), 409, "RES_003")
    assert_error(await client.delete(f"/api/companies/{cid}", headers=admin.headers), 409, "RES_003")
    from troupe.db import models
    from troupe.db.session import session_scope

    async with session_scope() as session:
        (await session.get(models.Task, uuid.UUID(task))).status = "completed"
    assert_ok(await client.delete(f"/api/companies/{cid}", headers=admin.headers))
    assert_error(await client.get(f"/api/companies/{cid}", headers=user.headers), 404, "RES_001")
    kept = assert_ok(await client.get(f"/api/agents/{agent['id']}", headers=user.headers))
    assert kept["companyId"] is None
    assert await count("Task", company_id=uuid.UUID(cid)) == 0
    assert_error(await client.delete(f"/api/companies/{cid}", headers=admin.headers), 404, "RES_001")


async def test_metrics_from_task_and_execution_rows(client, user):
    company = await make_company(client, user)
    cid = company["id"]
    agent = await make_agent(client, user, companyId=cid)
    now = utcnow()
    yesterday = now - timedelta(days=1)
    await insert_task(cid, user.id, status="completed", execution_time=1000, created_at=yesterday,
                           started_at=yesterday, completed_at=yesterday,
                           meta={"cost": 0.5, "resourceUsage": {"tokens": 100, "cpu": 1.5, "memory": 64}})
    t2 = await insert_task(cid, user.id, status="completed", execution_time=3000, created_at=now, started_at=now,
                           completed_at=now)
    await insert_execution(t2, agent_id=agent["id"], meta={"cost": 0.25, "tokensUsed": 40}, execution_time=200)
    await insert_execution(t2, agent_id=agent["id"], meta={"cost": 0.25, "tokensUsed": 60}, execution_time=400)
    await insert_task(cid, user.id, status="failed", created_at=now)
    await insert_task(cid, user.id, status="pending", created_at=now)
    await insert_task(cid, user.id, status="completed", created_at=now - timedelta(days=90), execution_time=99999)
    # Without startDate: every task (the company's own metrics); with it, the window.
    everything = assert_ok(await client.get(f"/api/companies/{cid}/metrics", headers=user.headers))
    assert everything["totalTasks"] == 5 and everything["startDate"] is None
    data = assert_ok(await client.get(f"/api/companies/{cid}/metrics", headers=user.headers,
                                      params={"startDate": iso(now - timedelta(days=30))}))
    t = data
    assert (t["totalTasks"], t["completedTasks"], t["failedTasks"], t["pendingTasks"]) == (4, 2, 1, 1)
    assert t["successRate"] == round(100 * 2 / 3, 2)
    assert t["averageExecutionTime"] == 2000
    assert t["costs"]["total"] == 1.0 and t["resourceUsage"]["tokens"] == 200
    assert t["executions"] == 2 and t["cancelledTasks"] == 0
    assert data["period"] == "day" and len(data["trend"]) in (30, 31)
    by_day = {p["date"][:10]: p for p in data["trend"]}
    assert by_day[now.date().isoformat()]["tasks"] == 3
    assert by_day[yesterday.date().isoformat()]["cost"] == 0.5
    assert sum(p["tasks"] for p in data["trend"]) == 4
    hourly = assert_ok(await client.get(f"/api/companies/{cid}/metrics", headers=user.headers,
                                        params={"period": "hour", "startDate": iso(now - timedelta(hours=2))}))
    assert hourly["totalTasks"] == 3 and len(hourly["trend"]) == 3
    detail = assert_ok(await client.get(f"/api/companies/{cid}", headers=user.headers))["metrics"]
    assert detail["totalTasks"] == 5 and detail["completedTasks"] == 3
    assert detail["costs"]["total"] == 1.0 and detail["costs"]["breakdown"]["api"] == 0.5
    assert detail["resourceUsage"]["tokens"] == 200 and detail["performance"]["responseTime"] == 300
    for params in ({"period": "year"}, {"startDate": "yesterday"},
                   {"startDate": now.isoformat(), "endDate": (now - timedelta(days=1)).isoformat()},
                   {"period": "hour", "startDate": (now - timedelta(days=400)).isoformat()}):
        resp = await client.get(f"/api/companies/{cid}/metrics", headers=user.headers, params=params)
        assert resp.status_code == 422 and resp.json()["error"]["code"].startswith("VAL_")


async def test_logs_filtered_and_paginated(client, user):
    company = await make_company(client, user)
    cid = company["id"]
    now = utcnow()
    await insert_log(cid, level="info", message="agent started", created_at=now - timedelta(minutes=3))
    await insert_log(cid, level="error", message="provider 100% timeout", created_at=now - timedelta(minutes=2))
    await insert_log(cid, level="error", message="tool failed", created_at=now - timedelta(minutes=1))
    h = user.headers
    data = assert_ok(await client.get(f"/api/companies/{cid}/logs", headers=h))
    assert [entry["message"] for entry in data] == ["tool failed", "provider 100% timeout", "agent started"]
    errors = await client.get(f"/api/companies/{cid}/logs", params={"level": "error", "limit": 1}, headers=h)
    assert errors.json()["pagination"]["total"] == 2 and errors.json()["data"][0]["message"] == "tool failed"
    found = assert_ok(await client.get(f"/api/companies/{cid}/logs", params={"search": "100%"}, headers=h))
    assert [e["message"] for e in found] == ["provider 100% timeout"]
    since = assert_ok(await client.get(f"/api/companies/{cid}/logs", headers=h, params={
        "startDate": (now - timedelta(minutes=2, seconds=30)).isoformat()}))
    assert len(since) == 2
    assert_error(await client.get(f"/api/companies/{cid}/logs", params={"level": "loud"}, headers=h), 422, "VAL_001")
    # The spec's LogEntry: the time is `timestamp`, as in /api/logs.
    assert {"timestamp", "userId", "requestId", "taskId"} <= set(data[0]) and "createdAt" not in data[0]
    assert data[0]["timestamp"].endswith("Z")
    # A limit above 100 is served as 100, not refused.
    clamped = await client.get(f"/api/companies/{cid}/logs", params={"limit": 1000}, headers=h)
    assert clamped.status_code == 200 and clamped.json()["pagination"]["limit"] == 100
    assert_error(await client.get(f"/api/companies/{cid}/logs", params={"limit": 0}, headers=h), 422, "VAL_001")


async def test_tasks_listing(client, user):
    company = await make_company(client, user)
    cid = company["id"]
    done = await insert_task(cid, user.id, status="completed", meta={"cost": 1})
    await insert_task(cid, user.id, status="failed")
    data = assert_ok(await client.get(f"/api/companies/{cid}/tasks", params={"status": "completed"},
                                      headers=user.headers))
    assert [t["id"] for t in data] == [done] and data[0]["metadata"] == {"cost": 1}
    assert data[0]["companyId"] == cid and data[0]["type"] == "single_agent"
    all_tasks = await client.get(f"/api/companies/{cid}/tasks", params={"limit": 1}, headers=user.headers)
    assert all_tasks.json()["pagination"]["total"] == 2
    assert_error(await client.get(f"/api/companies/{cid}/tasks", params={"status": "weird"}, headers=user.headers),
                 422, "VAL_001")


async def test_duplicate_deep_copies_with_remapped_agents(client, user, user_factory):
    member = await user_factory("user")
    tool = await insert_tool(user.id)
    company = await make_company(client, user, tools=[tool], settings={"maxAgents": 4})
    cid = company["id"]
    agent = await make_agent(client, user, companyId=cid)
    from troupe.db import models
    from troupe.db.session import session_scope
    from troupe.security import SecretBox

    sealed = SecretBox().seal("s3cr3t-value")
    async with session_scope() as session:
        session.add(models.Workflow(
            name="Flow", company_id=uuid.UUID(cid), created_by=uuid.UUID(user.id), status="active",
            nodes=[{"id": "a", "type": "agent", "position": {"x": 0, "y": 0},
                    "data": {"label": "A", "agentId": agent["id"]}}], edges=[],
            configuration={"secrets": {"API": sealed, "PLAIN": "clear-text"}, "variables": {"x": 1}}))
    assert_ok(await client.put(f"/api/companies/{cid}", headers=user.headers,
                               json={"teamMembers": [{"userId": member.id, "role": "viewer"}]}))
    copy = assert_ok(await client.post(f"/api/companies/{cid}/duplicate", json={"name": "Copy"},
                                       headers=user.headers), 201)
    assert copy["id"] != cid and copy["name"] == "Copy" and copy["ownerId"] == user.id
    assert copy["settings"]["maxAgents"] == 4 and copy["teamMembers"] == []
    assert len(copy["agents"]) == 1 and copy["agents"][0]["id"] != agent["id"]
    assert copy["agents"][0]["configuration"] == agent["configuration"]
    assert [t["id"] for t in copy["tools"]] == [tool]
    async with session_scope() as session:
        from sqlalchemy import select

        wf = (await session.execute(select(models.Workflow).where(
            models.Workflow.company_id == uuid.UUID(copy["id"])))).scalar_one()
    assert wf.nodes[0]["data"]["agentId"] == copy["agents"][0]["id"]
    # A copy never carries secrets: the names stay, the values are to be entered again.
    assert wf.configuration["secrets"] == {"API": "", "PLAIN": ""}
    assert [(r["kind"], r["fields"]) for r in copy["needsReentry"]] == [
        ("workflow", ["configuration.secrets.API", "configuration.secrets.PLAIN"])]
    assert wf.status == "draft"
    with_team = assert_ok(await client.post(f"/api/companies/{cid}/duplicate",
                                            json={"name": "Copy 2", "includeData": True}, headers=user.headers), 201)
    assert with_team["teamMembers"] == [member.id]
    assert_error(await client.post(f"/api/companies/{cid}/duplicate", json={}, headers=user.headers), 422, "VAL_002")
    assert_error(await client.post(f"/api/companies/{uuid.uuid4()}/duplicate", json={"name": "x"},
                                   headers=user.headers), 404, "RES_001")


async def test_export_import_roundtrip_and_malformed_documents(client, user):
    tool = await insert_tool(user.id, name="search")
    source = await make_company(client, user, tools=[tool], tags=["src"])
    agent = await make_agent(client, user, companyId=source["id"],
                             configuration={"temperature": 0.2, "tools": [tool]})
    from troupe.db import models
    from troupe.db.session import session_scope
    from troupe.security import SecretBox

    async with session_scope() as session:
        session.add(models.Workflow(
            name="Flow", company_id=uuid.UUID(source["id"]), created_by=uuid.UUID(user.id),
            nodes=[{"id": "a", "type": "agent", "position": {"x": 0, "y": 0},
                    "data": {"label": "A", "agentId": agent["id"]}}], edges=[],
            configuration={"secrets": {"KEY": SecretBox().seal("topsecret")}, "timeout": 30}))
    resp = await client.post(f"/api/companies/{source['id']}/export", headers=user.headers)
    doc = assert_ok(resp)
    assert doc["format"] == "troupe.company" and doc["version"] == 1
    assert "topsecret" not in resp.text and "enc:v1:" not in resp.text
    assert doc["tools"] == [{"id": tool, "name": "search", "version": "1.0.0"}]
    assert doc["agents"][0]["configuration"]["temperature"] == 0.2
    configuration = doc["workflows"][0]["configuration"]  # the typed WorkflowConfiguration, secrets left out
    assert configuration["timeout"] == 30 and configuration["secrets"] == {} and configuration["strategy"]

    target = await make_company(client, user)
    tid = target["id"]
    result = assert_ok(await client.post(f"/api/companies/{tid}/import", json={"data": doc}, headers=user.headers))
    new_agent = result["agents"][agent["id"]]
    assert new_agent != agent["id"] and result["toolsInstalled"] == [tool]
    detail = assert_ok(await client.get(f"/api/companies/{tid}", headers=user.headers))
    assert detail["name"] == target["name"]  # merge mode keeps the target's own config
    assert [a["id"] for a in detail["agents"]] == [new_agent]
    async with session_scope() as session:
        wf = await session.get(models.Workflow, uuid.UUID(result["workflows"][0]))
    assert wf.nodes[0]["data"]["agentId"] == new_agent

    over = assert_ok(await client.post(f"/api/companies/{tid}/import", json={"data": doc, "overwrite": True},
                                       headers=user.headers))
    detail = assert_ok(await client.get(f"/api/companies/{tid}", headers=user.headers))
    assert detail["name"] == source["name"] and detail["tags"] == ["src"]
    assert [a["id"] for a in detail["agents"]] == [over["agents"][agent["id"]]]
    assert len(detail["workflows"]) == 1

    agents_before = await count("Agent", created_by=uuid.UUID(user.id))
    workflows_before = await count("Workflow", company_id=uuid.UUID(tid))
    bad_docs = [
        {**doc, "format": "other.company"},
        {**doc, "version": 2},
        {k: v for k, v in doc.items() if k != "company"},
        {**doc, "company": {**doc["company"], "type": "spaceship"}},
        {**doc, "agents": [{**doc["agents"][0], "configuration": {"temperature": 9}}]},
        {**doc, "agents": [{**doc["agents"][0], "rating": 5}]},
        {**doc, "agents": doc["agents"] * 2},
        {**doc, "workflows": [{**doc["workflows"][0], "nodes": [{"id": "x"}]}]},
        {**doc, "agents": "many"},
    ]
    for bad in bad_docs:
        resp = await client.post(f"/api/companies/{tid}/import", json={"data": bad}, headers=user.headers)
        assert resp.status_code == 422 and resp.json()["error"]["code"].startswith("VAL_"), resp.text
    # semantically broken: unknown tool, context window over the model's, unknown agent in a node
    semantic = [
        {**doc, "tools": [{"id": str(uuid.uuid4())}]},
        {**doc, "agents": [{**doc["agents"][0], "model": "gpt-4", "provider": "openai",
                            "configuration": {"contextWindow": 100000}}]},
        {**doc, "workflows": [{**doc["workflows"][0], "nodes": [{**doc["workflows"][0]["nodes"][0], "data": {
            "label": "A", "agentId": str(uuid.uuid4())}}]}]},
    ]
    for bad in semantic:
        err = assert_error(await client.post(f"/api/companies/{tid}/import", json={"data": bad, "overwrite": True},
                                             headers=user.headers), 422, "VAL_001")
        assert err["details"]
    assert_error(await client.post(f"/api/companies/{tid}/import", json={"overwrite": True}, headers=user.headers),
                 422, "VAL_002")
    assert await count("Agent", created_by=uuid.UUID(user.id)) == agents_before
    assert await count("Workflow", company_id=uuid.UUID(tid)) == workflows_before
    # over the limit: nothing written either
    small = await make_company(client, user, settings={"maxAgents": 1})
    assert_error(await client.post(f"/api/companies/{small['id']}/import",
                                   json={"data": {**doc, "agents": [doc["agents"][0], {**doc["agents"][0], "id": "b"}]}},
                                   headers=user.headers), 409, "RES_004")
    assert await count("Agent", company_id=uuid.UUID(small["id"])) == 0


async def test_list_rows_embed_agents_tools_and_workflow_bounded(client, user):
    tag = uuid.uuid4().hex[:8]
    agents = [await make_agent(client, user) for _ in range(11)]
    tool = await insert_tool(user.id)
    company = await make_company(
        client, user, tags=[tag], agents=[a["id"] for a in agents], tools=[tool], settings={"maxAgents": 12},
        workflow={"nodes": [{"id": "in", "type": "input", "position": {"x": 0, "y": 0}, "data": {"label": "In"}}],
                  "edges": []})
    rows = assert_ok(await client.get("/api/companies", params={"tags": tag}, headers=user.headers))
    assert [r["id"] for r in rows] == [company["id"]]
    row = rows[0]
    # At most LIST_EMBED_LIMIT (10) agents per row, the first attached; agentCount is the total.
    assert row["agentCount"] == 11 and len(row["agents"]) == 10
    first = row["agents"][0]
    assert first["id"] == agents[0]["id"]
    assert {"id", "name", "description", "type", "model", "provider", "status", "capabilities", "configuration",
            "performance", "companyId", "createdBy", "tags", "version", "isPublic", "rating", "reviews",
            "createdAt", "updatedAt"} <= set(first)
    assert set(first["performance"]["trends"]) == {"daily", "weekly", "monthly"}
    assert row["toolCount"] == 1 and row["tools"][0]["id"] == tool and "configuration" in row["tools"][0]
    assert [len(row["tools"][0]["usage"]["trends"][k]) for k in ("daily", "weekly", "monthly")] == [7, 4, 12]
    assert row["workflow"]["nodes"][0]["id"] == "in" and row["workflow"]["companyId"] == company["id"]
    assert {"resourceUsage", "costs", "performance"} <= set(row["metrics"])
    detail = assert_ok(await client.get(f"/api/companies/{company['id']}", headers=user.headers))
    assert len(detail["agents"]) == 11


async def test_real_run_fills_company_metrics_and_agent_performance(client, user):
    from tests.utils.engine import make_workflow, node, run_workflow, wait_status

    company = await make_company(client, user)
    cid = company["id"]
    agent = await make_agent(client, user, companyId=cid)
    wf = await make_workflow(cid, user.id, [
        node("in", "input"),
        node("ask", "agent", agentId=agent["id"], prompt="Say hello"),
        node("out", "output", value={"text": "{{nodes.ask.output.text}}"}),
    ], [{"id": "e1", "source": "in", "target": "ask"}, {"id": "e2", "source": "ask", "target": "out"}],
        strategy="sequential")
    task = await wait_status(client, user, await run_workflow(client, user, cid, wf, {"q": 1}))
    assert task["status"] == "completed", task

    m = assert_ok(await client.get(f"/api/companies/{cid}/metrics", headers=user.headers))
    assert (m["totalTasks"], m["completedTasks"], m["failedTasks"], m["pendingTasks"]) == (1, 1, 0, 0)
    assert m["successRate"] == 100.0 and m["averageExecutionTime"] >= 0 and m["lastExecutionAt"]
    assert m["resourceUsage"]["tokens"] > 0 and m["executions"] >= 3 and m["failedExecutions"] == 0
    assert m["costs"]["total"] == 0 and m["costs"]["breakdown"]["api"] == 0  # the simulated provider is free
    # Not measured, so null rather than invented (README: Differences from the specification).
    assert m["resourceUsage"]["cpu"] is None and m["resourceUsage"]["bandwidth"] is None
    assert m["costs"]["breakdown"]["compute"] is None and m["performance"]["uptime"] is None
    assert m["performance"]["throughput"] == round(1 / 24, 4)
    assert sum(p["completed"] for p in m["trend"]) == 1
    embedded = assert_ok(await client.get(f"/api/companies/{cid}", headers=user.headers))["metrics"]
    assert {k: embedded[k] for k in ("totalTasks", "completedTasks", "successRate", "resourceUsage", "costs")} == \
        {k: m[k] for k in ("totalTasks", "completedTasks", "successRate", "resourceUsage", "costs")}

    perf = assert_ok(await client.get(f"/api/agents/{agent['id']}", headers=user.headers))["performance"]
    assert (perf["totalRequests"], perf["successfulRequests"], perf["failedRequests"]) == (1, 1, 0)
    assert perf["averageTokensUsed"] > 0 and perf["popularityScore"] == 1 and perf["errorRate"] == 0
    assert perf["lastUsedAt"] and perf["costPerRequest"] == 0
    assert perf["trends"]["daily"][-1]["requests"] == 1 and perf["trends"]["daily"][-1]["tokens"] > 0
    assert perf["trends"]["monthly"][-1]["requests"] == 1
    listed = assert_ok(await client.get("/api/agents", params={"companyId": cid}, headers=user.headers))
    assert listed[0]["performance"] == perf


async def test_import_accepts_the_spec_document_shape(client, user):
    tool = await insert_tool(user.id, name="lookup")
    source = await make_company(client, user, tools=[tool], tags=["spec"])
    agent = await make_agent(client, user, companyId=source["id"], configuration={"temperature": 0.3})
    assert_ok(await client.post(f"/api/agents/{agent['id']}/train", headers=user.headers,
                                json={"trainingData": [{"input": "a", "output": "b"}]}))
    from tests.utils.engine import make_workflow, node

    await make_workflow(source["id"], user.id, [node("in", "input"), node("ask", "agent", agentId=agent["id"])],
                        [{"id": "e1", "source": "in", "target": "ask"}], status="draft")
    detail = assert_ok(await client.get(f"/api/companies/{source['id']}", headers=user.headers))
    # The spec's {company, agents, tools, workflows}, built from GET answers as they are.
    spec_doc = {"company": detail, "agents": detail["agents"], "tools": detail["tools"],
                "workflows": [detail["workflow"]]}
    target = await make_company(client, user)
    tid = target["id"]
    before = await count("Agent", company_id=uuid.UUID(tid))
    bad = {**spec_doc, "agents": [{**detail["agents"][0], "bogus": 1}]}
    err = assert_error(await client.post(f"/api/companies/{tid}/import", json={"data": bad}, headers=user.headers),
                       422, "VAL_001")
    assert "bogus" in (err.get("field") or "")
    bad_tool = {**spec_doc, "tools": [{**detail["tools"][0], "id": str(uuid.uuid4())}]}
    assert_error(await client.post(f"/api/companies/{tid}/import", json={"data": bad_tool}, headers=user.headers),
                 422, "VAL_001")
    assert await count("Agent", company_id=uuid.UUID(tid)) == before  # nothing written

    result = assert_ok(await client.post(f"/api/companies/{tid}/import", json={"data": spec_doc, "overwrite": True},
                                         headers=user.headers))
    new_agent = result["agents"][agent["id"]]
    assert new_agent != agent["id"] and result["overwritten"] is True
    imported = assert_ok(await client.get(f"/api/companies/{tid}", headers=user.headers))
    assert imported["name"] == source["name"] and imported["tags"] == ["spec"]
    assert [a["id"] for a in imported["agents"]] == [new_agent]
    assert imported["agents"][0]["configuration"]["temperature"] == 0.3
    assert [t["id"] for t in imported["tools"]] == [tool]
    assert imported["workflow"]["status"] == "draft"
    assert imported["workflow"]["nodes"][1]["data"]["agentId"] == new_agent
