"""Workflows over HTTP: drafts, activation, validation, secrets, export/import,
schedules, templates and isolation."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from tests.utils.fixtures import assert_error, assert_ok
from tests.utils.tw_helpers import fetch, make_agent, make_company

SECRET = "wf-secret-value-42"


def node(nid, type_, **data):
    return {"id": nid, "type": type_, "position": {"x": 0, "y": 0}, "data": {"label": nid, **data}}


def edge(source, target, **extra):
    return {"id": f"{source}-{target}", "source": source, "target": target, **extra}


def valid_graph(agent_id=None):
    agent = node("ask", "agent", agentId=agent_id) if agent_id else \
        node("ask", "agent", configuration={"provider": "simulated", "model": "simulated-1", "prompt": "{{input}}"})
    return {"nodes": [node("in", "input"), agent, node("out", "output")],
            "edges": [edge("in", "ask"), edge("ask", "out")]}


def body(company_id, **overrides):
    data = {"name": f"Flow {uuid.uuid4().hex[:6]}", "description": "test flow", "companyId": company_id,
            **valid_graph(), "configuration": {"strategy": "sequential", "secrets": {"apiKey": SECRET}},
            "tags": ["test"]}
    data.update(overrides)
    return data


async def create(client, who, company_id, expect=201, **overrides):
    return assert_ok(await client.post("/api/workflows", json=body(company_id, **overrides), headers=who.headers),
                     expect)


async def count_workflows(company_id):
    from sqlalchemy import func, select

    from troupe.db import models
    from troupe.db.session import session_scope

    async with session_scope() as session:
        return (await session.execute(select(func.count()).select_from(models.Workflow).where(
            models.Workflow.company_id == uuid.UUID(company_id)))).scalar_one()


async def test_create_draft_masks_and_seals_secrets(client, user):
    company = await make_company(user.id)
    response = await client.post("/api/workflows", json=body(company), headers=user.headers)
    wf = assert_ok(response, 201)
    assert SECRET not in response.text
    assert wf["status"] == "draft" and wf["version"] == "1.0.0" and wf["companyId"] == company
    assert wf["configuration"]["secrets"] == {"apiKey": "********"}
    assert wf["configuration"]["retryPolicy"] is None  # the company's retryPolicy applies
    assert wf["configuration"]["logging"]["level"] == "info" and wf["configuration"]["timeout"] == 3600
    for path in (f"/api/workflows/{wf['id']}", "/api/workflows"):
        assert SECRET not in (await client.get(path, headers=user.headers)).text
    export = await client.post(f"/api/workflows/{wf['id']}/export", headers=user.headers)
    assert SECRET not in export.text and assert_ok(export)["workflow"]["configuration"]["secrets"] == {}

    from troupe.security import SecretBox

    row = await fetch("Workflow", wf["id"])
    stored = row.configuration["secrets"]["apiKey"]
    assert stored != SECRET and SecretBox().open(stored) == SECRET
    # Sending the mask back keeps the secret; a new value replaces it.
    config = wf["configuration"]
    config["timeout"] = 60
    updated = assert_ok(await client.put(f"/api/workflows/{wf['id']}", json={"configuration": config},
                                         headers=user.headers))
    assert updated["version"] == "1.0.1"
    assert SecretBox().open((await fetch("Workflow", wf["id"])).configuration["secrets"]["apiKey"]) == SECRET


async def test_invalid_draft_is_stored_but_activation_is_refused(client, user):
    company = await make_company(user.id)
    broken = {"nodes": [node("in", "input"), node("loop", "loop"), node("x", "delay", configuration={"seconds": 1})],
              "edges": [edge("in", "loop"), edge("loop", "x"), edge("x", "loop"), edge("x", "nowhere")]}
    draft = await create(client, user, company, **broken)
    assert draft["status"] == "draft" and len(draft["nodes"]) == 3

    before = await count_workflows(company)
    error = assert_error(await client.post("/api/workflows", json=body(company, status="active", **broken),
                                           headers=user.headers), 422, "BIZ_001")
    codes = {p["code"] for p in error["details"]}
    assert {"loop_without_bound", "edge_target_missing", "no_output_node"} <= codes
    assert await count_workflows(company) == before  # nothing written

    error = assert_error(await client.put(f"/api/workflows/{draft['id']}", json={"status": "active"},
                                          headers=user.headers), 422, "BIZ_001")
    assert any(p["nodeId"] == "loop" for p in error["details"])
    assert (await fetch("Workflow", draft["id"])).status == "draft"

    fixed = assert_ok(await client.put(f"/api/workflows/{draft['id']}", json={**valid_graph(), "status": "active"},
                                       headers=user.headers))
    assert fixed["status"] == "active" and fixed["version"] == "1.0.1"
    # An active workflow stays valid: a breaking edit is refused and leaves it as it was.
    assert_error(await client.put(f"/api/workflows/{draft['id']}", json={"edges": []}, headers=user.headers),
                 422, "BIZ_001")
    assert len((await fetch("Workflow", draft["id"])).edges) == 2


async def test_activation_with_own_agent(client, user, other_user):
    company = await make_company(user.id)
    agent = await make_agent(user.id, company)
    wf = await create(client, user, company, status="active", **valid_graph(agent))
    assert wf["status"] == "active" and wf["nodes"][1]["data"]["agentId"] == agent
    foreign_agent = await make_agent(other_user.id, await make_company(other_user.id))
    error = assert_error(await client.post("/api/workflows", json=body(company, status="active",
                                                                       **valid_graph(foreign_agent)),
                                           headers=user.headers), 422, "BIZ_001")
    assert [p["code"] for p in error["details"]] == ["agent_not_found"]


async def test_create_refuses_bad_input(client, user):
    company = await make_company(user.id)
    too_many = [node(f"n{i}", "input") for i in range(501)]
    cases = [
        ({"nodes": [node("a", "teleport")]}, "VAL_001", "nodes.0.type"),
        ({"edges": [edge("a", "b", type="sometimes")]}, "VAL_001", "edges.0.type"),
        ({"nodes": [{"id": "a", "type": "input", "data": {"label": "x" * 201}}]}, "VAL_001", "nodes.0.data.label"),
        ({"nodes": [{"id": "a", "type": "input", "data": {}}]}, "VAL_002", "nodes.0.data.label"),
        ({"nodes": too_many}, "VAL_001", "nodes"),
        ({"nodes": "many"}, "VAL_003", "nodes"),
        ({"nodes": [node("c", "condition", conditions=[{"field": "x", "operator": "like", "value": 1}])]},
         "VAL_001", "nodes.0.data.conditions.0.operator"),
        ({"configuration": {"strategy": "chaotic"}}, "VAL_001", "configuration.strategy"),
        ({"configuration": {"timeout": 0}}, "VAL_001", "configuration.timeout"),
        ({"configuration": {"retryPolicy": {"maxRetries": 99}}}, "VAL_001", "configuration.retryPolicy.maxRetries"),
        ({"triggers": [{"id": "t", "type": "telepathy"}]}, "VAL_001", "triggers.0.type"),
        ({"status": "paused"}, "VAL_001", "status"),
        ({"createdBy": str(uuid.uuid4())}, "VAL_001", "createdBy"),
        ({"version": "9.9.9"}, "VAL_001", "version"),
        ({"tags": ["x"] * 51}, "VAL_001", "tags"),
        ({"name": "n" * 256}, "VAL_001", "name"),
    ]
    for override, code, field in cases:
        assert_error(await client.post("/api/workflows", json=body(company, **override), headers=user.headers),
                     422, code, field=field)
    # A schedule as a GET answers it: nextRun is the server's (ignored when sent), an unknown key is refused.
    sent = {"cron": "* * * * *", "nextRun": "2030-01-01T00:00:00Z"}
    created = await create(client, user, company, schedule=sent)
    assert created["schedule"]["nextRun"] and not created["schedule"]["nextRun"].startswith("2030")
    assert_error(await client.post("/api/workflows", json=body(company, schedule={**sent, "runAt": 1}),
                                   headers=user.headers), 422, "VAL_001", field="schedule.runAt")
    assert_error(await client.post("/api/workflows", json=body(company, name=None), headers=user.headers),
                 422, "VAL_002", field="name")
    assert_error(await client.post("/api/workflows", json=body(str(uuid.uuid4())), headers=user.headers),
                 404, "RES_001")


async def test_isolation(client, user, other_user, admin, user_factory):
    member, watcher = await user_factory("user"), await user_factory("user")
    company = await make_company(user.id, members={member.id: "member", watcher.id: "viewer"})
    wf = await create(client, user, company)
    wid = wf["id"]
    routes = [("get", f"/api/workflows/{wid}", None), ("put", f"/api/workflows/{wid}", {"name": "x"}),
              ("post", f"/api/workflows/{wid}/validate", None), ("post", f"/api/workflows/{wid}/export", None),
              ("post", f"/api/workflows/{wid}/import",
               {"data": {"format": "troupe.workflow", "version": "1", "workflow": {"name": "x"}}}),
              ("post", f"/api/workflows/{wid}/schedule", {"cron": "0 * * * *", "timezone": "UTC"})]
    for method, path, payload in routes:
        kwargs = {"json": payload} if payload is not None else {}
        assert_error(await client.request(method.upper(), path, headers=other_user.headers, **kwargs), 404, "RES_001")
    assert wid not in {w["id"] for w in assert_ok(await client.get("/api/workflows", params={"limit": 100},
                                                                   headers=other_user.headers))}
    # Company members and viewers read; only the owner (or an admin) writes.
    for reader in (member, watcher):
        assert_ok(await client.get(f"/api/workflows/{wid}", headers=reader.headers))
        assert_ok(await client.post(f"/api/workflows/{wid}/validate", headers=reader.headers))
        assert_error(await client.put(f"/api/workflows/{wid}", json={"name": "x"}, headers=reader.headers),
                     403, "AUTH_004")
        assert_error(await client.post(f"/api/workflows/{wid}/schedule", json={"cron": "0 * * * *"},
                                       headers=reader.headers), 403, "AUTH_004")
    assert_error(await client.post("/api/workflows", json=body(company), headers=member.headers), 403, "AUTH_004")
    assert assert_ok(await client.put(f"/api/workflows/{wid}", json={"name": "By admin"},
                                      headers=admin.headers))["name"] == "By admin"
    listed = assert_ok(await client.get("/api/workflows", params={"companyId": company}, headers=member.headers))
    assert [w["id"] for w in listed] == [wid]


async def test_validate_route_reports_resources(client, user, other_user):
    company = await make_company(user.id)
    private_tool = assert_ok(await client.post("/api/tools", json={
        "name": "Private", "description": "d", "type": "api", "category": "data", "configuration": {},
        "schema": {}}, headers=other_user.headers), 201)
    missing_agent = str(uuid.uuid4())
    graph = {"nodes": [node("in", "input"), node("ask", "agent", agentId=missing_agent),
                       node("use", "tool", toolId=private_tool["id"]), node("out", "output")],
             "edges": [edge("in", "ask"), edge("ask", "use"), edge("use", "out")]}
    wf = await create(client, user, company, **graph)
    result = assert_ok(await client.post(f"/api/workflows/{wf['id']}/validate", headers=user.headers))
    assert result["isValid"] is False and result["valid"] is False
    assert {(e["code"], e["nodeId"]) for e in result["errors"]} == {("agent_not_found", "ask"),
                                                                    ("tool_not_found", "use")}
    assert all(e["type"] == "invalid_config" and e["severity"] == "error" for e in result["errors"])
    assert result["suggestions"]
    ok = await create(client, user, company)
    result = assert_ok(await client.post(f"/api/workflows/{ok['id']}/validate", headers=user.headers))
    assert result == {"isValid": True, "valid": True, "errors": [], "warnings": [], "suggestions": []}
    assert_error(await client.post(f"/api/workflows/{uuid.uuid4()}/validate", headers=user.headers), 404, "RES_001")


async def test_export_import_round_trip_and_bad_documents(client, user):
    company = await make_company(user.id)
    source = await create(client, user, company, triggers=[{"id": "m", "type": "manual"}],
                          schedule={"cron": "0 9 * * 1", "timezone": "Europe/Berlin"})
    doc = assert_ok(await client.post(f"/api/workflows/{source['id']}/export", headers=user.headers))
    assert doc["format"] == "troupe.workflow" and doc["version"] == "1"
    assert doc["metadata"]["exportedBy"] == user.id and doc["metadata"]["platform"] == "troupe"
    assert doc["workflow"]["nodes"] == source["nodes"] and doc["dependencies"] == {"agents": [], "tools": []}

    target = await create(client, user, company, nodes=[], edges=[], name="Empty")
    imported = assert_ok(await client.post(f"/api/workflows/{target['id']}/import", json={"data": doc},
                                           headers=user.headers))
    assert imported["nodes"] == source["nodes"] and imported["edges"] == source["edges"]
    assert imported["name"] == source["name"] and imported["version"] == "1.0.1"
    assert imported["schedule"]["cron"] == "0 9 * * 1" and imported["triggers"][0]["type"] == "manual"
    # Exports carry no secrets: the target's own secret is kept.
    from troupe.security import SecretBox

    assert SecretBox().open((await fetch("Workflow", target["id"])).configuration["secrets"]["apiKey"]) == SECRET

    path = f"/api/workflows/{target['id']}/import"
    assert_error(await client.post(path, json={"data": doc}, headers=user.headers), 409, "RES_002")
    bad_node = {**doc, "workflow": {**doc["workflow"], "nodes": [{"id": "a", "type": "warp", "data": {"label": "a"}}]}}
    cases = [
        ({"data": "not a document", "overwrite": True}, "VAL_003", "data"),
        ({"data": {**doc, "format": "n8n"}, "overwrite": True}, "VAL_001", "data.format"),
        ({"data": {**doc, "version": 2}, "overwrite": True}, "VAL_001", "data.version"),
        ({"data": {**doc, "workflow": None}, "overwrite": True}, "VAL_003", "data.workflow"),
        ({"data": bad_node, "overwrite": True}, "VAL_001", "data.workflow.nodes.0.type"),
        ({"data": doc, "overwrite": True, "createDependencies": True}, "VAL_001", "createDependencies"),
        ({"data": doc, "overwrite": "perhaps"}, "VAL_003", "overwrite"),
        ({"overwrite": True}, "VAL_002", "data"),
    ]
    for payload, code, field in cases:
        assert_error(await client.post(path, json=payload, headers=user.headers), 422, code, field=field)
    row = await fetch("Workflow", target["id"])
    assert row.version == "1.0.1" and len(row.nodes) == 3  # nothing written by the failures
    assert_ok(await client.post(path, json={"data": doc, "overwrite": True}, headers=user.headers))


async def test_schedule(client, user):
    company = await make_company(user.id)
    wf = await create(client, user, company)
    path = f"/api/workflows/{wf['id']}/schedule"
    schedule = assert_ok(await client.post(path, json={"enabled": True, "cron": "30 8 * * *",
                                                       "timezone": "America/New_York", "variables": {"x": 1}},
                                           headers=user.headers))
    next_run = datetime.fromisoformat(schedule["nextRun"].replace("Z", "+00:00"))
    assert next_run > datetime.now(UTC)
    assert next_run.astimezone(__import__("zoneinfo").ZoneInfo("America/New_York")).strftime("%H:%M") == "08:30"
    stored = (await fetch("Workflow", wf["id"])).schedule
    assert stored["cron"] == "30 8 * * *" and stored["variables"] == {"x": 1} and stored["nextRun"]
    assert assert_ok(await client.get(f"/api/workflows/{wf['id']}", headers=user.headers))["schedule"]["enabled"]
    off = assert_ok(await client.post(path, json={"enabled": False, "cron": "30 8 * * *", "timezone": "UTC"},
                                      headers=user.headers))
    assert off["nextRun"] is None
    for payload, field in (({"cron": "61 * * * *"}, "cron"), ({"cron": "every day"}, "cron"),
                           ({"cron": "0 * * * *", "timezone": "Mars/Olympus"}, "timezone")):
        assert_error(await client.post(path, json=payload, headers=user.headers), 422, "VAL_001", field=field)
    assert_error(await client.post(path, json={"timezone": "UTC"}, headers=user.headers), 422, "VAL_002",
                 field="cron")
    assert_error(await client.post(path, json={"cron": "0 * * * *", "enabled": "sometimes"}, headers=user.headers),
                 422, "VAL_003", field="enabled")
    # A draft may hold an invalid schedule; validate reports it.
    draft = await create(client, user, company, schedule={"cron": "nope", "timezone": "UTC"})
    result = assert_ok(await client.post(f"/api/workflows/{draft['id']}/validate", headers=user.headers))
    assert [e["code"] for e in result["errors"]] == ["invalid_cron"]


async def test_templates(client, user, other_user, admin):
    templates = assert_ok(await client.get("/api/workflows/templates", params={"limit": 100},
                                           headers=other_user.headers))
    builtin = {t["name"]: t for t in templates if t["companyId"] is None}
    assert {"Research and summarise", "Support triage", "Content pipeline", "Webhook notify"} <= set(builtin)
    support = assert_ok(await client.get("/api/workflows/templates", params={"category": "support"},
                                         headers=user.headers))
    assert support and all(t["templateCategory"] == "support" for t in support)
    simple = assert_ok(await client.get("/api/workflows/templates", params={"complexity": "simple"},
                                        headers=user.headers))
    assert {"Research and summarise", "Webhook notify"} <= {t["name"] for t in simple}
    assert_error(await client.get("/api/workflows/templates", params={"complexity": "epic"},
                                  headers=user.headers), 422, "VAL_001", field="complexity")
    for template in builtin.values():
        result = assert_ok(await client.post(f"/api/workflows/{template['id']}/validate", headers=user.headers))
        assert result["isValid"], (template["name"], result)
    pipeline = builtin["Content pipeline"]
    assert any(n["type"] == "loop" and n["data"]["configuration"]["maxIterations"] == 10 for n in pipeline["nodes"])
    assert_error(await client.put(f"/api/workflows/{pipeline['id']}", json={"name": "mine"}, headers=user.headers),
                 403, "AUTH_004")

    company = await make_company(user.id)
    copy = assert_ok(await client.post("/api/workflows", json={"companyId": company, "templateId": pipeline["id"]},
                                       headers=user.headers), 201)
    assert copy["name"] == "Content pipeline" and copy["nodes"] == pipeline["nodes"] and copy["isTemplate"] is False
    assert copy["companyId"] == company and copy["id"] != pipeline["id"]
    active = assert_ok(await client.post("/api/workflows", json={"companyId": company, "templateId": builtin[
        "Support triage"]["id"], "name": "Triage", "status": "active"}, headers=user.headers), 201)
    assert active["status"] == "active" and active["name"] == "Triage"
    not_template = await create(client, user, company)
    assert_error(await client.post("/api/workflows", json={"companyId": company, "templateId": not_template["id"]},
                                   headers=user.headers), 404, "RES_001")
    # A user's template is readable by everyone, writable only by its company.
    mine = await create(client, user, company, isTemplate=True, templateCategory="custom-cat")
    seen = assert_ok(await client.get("/api/workflows", params={"isTemplate": "true", "category": "custom-cat"},
                                      headers=other_user.headers))
    assert [t["id"] for t in seen] == [mine["id"]]
    assert_error(await client.put(f"/api/workflows/{mine['id']}", json={"name": "x"}, headers=other_user.headers),
                 403, "AUTH_004")


async def test_list_filters_and_delete(client, user, admin, other_user):
    company = await make_company(user.id)
    a = await create(client, user, company, name="Alpha invoices", tags=["finance"])
    b = await create(client, user, company, name="Beta", status="active")
    h = user.headers

    async def ids(**params):
        return [w["id"] for w in assert_ok(await client.get("/api/workflows", params={"companyId": company, **params},
                                                            headers=h))]

    assert set(await ids()) == {a["id"], b["id"]}
    assert await ids(status="active") == [b["id"]]
    assert await ids(search="invoices") == [a["id"]]
    assert await ids(tags="finance") == [a["id"]]
    assert await ids(sort="name", order="asc") == [a["id"], b["id"]]
    assert await ids(isTemplate="true") == []
    assert_error(await client.get("/api/workflows", params={"sort": "secrets"}, headers=h), 422, "VAL_001",
                 field="sort")
    assert_error(await client.get("/api/workflows", params={"status": "sleeping"}, headers=h), 422, "VAL_001",
                 field="status")
    assert_error(await client.get("/api/workflows", params={"companyId": "x"}, headers=h), 422, "VAL_003",
                 field="companyId")

    assert_error(await client.delete(f"/api/workflows/{a['id']}", headers=other_user.headers), 404, "RES_001")
    from troupe.db import models
    from troupe.db.session import session_scope

    async with session_scope() as session:
        session.add(models.Task(name="run", type="workflow", status="running", company_id=uuid.UUID(company),
                                workflow_id=uuid.UUID(b["id"]), created_by=uuid.UUID(user.id)))
    assert_error(await client.delete(f"/api/workflows/{b['id']}", headers=admin.headers), 409, "RES_003")
    assert_ok(await client.delete(f"/api/workflows/{a['id']}", headers=admin.headers))
    assert_error(await client.get(f"/api/workflows/{a['id']}", headers=h), 404, "RES_001")
    assert_error(await client.delete(f"/api/workflows/{a['id']}", headers=admin.headers), 404, "RES_001")
