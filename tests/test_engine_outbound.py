"""Engine gaps closed: built-in templates run (inline agent nodes), sealed secrets
opened only inside the node task, webhooks and http tools end to end against a
local server (loopback admitted by the test deployment's TROUPE_OUTBOUND_ALLOWLIST),
webhook idempotency across a retry, and private destinations refused."""

from __future__ import annotations

import json
import uuid

import pytest
from aiohttp import web
from sqlalchemy import select

from tests.utils.engine import chain, executions, make_company, make_workflow, node, run_workflow, wait_status
from tests.utils.fixtures import assert_ok
from tests.utils.stub_http import StubServer

TOOL_SECRET = "tool-key-5f0c1b9e2a7d"
HOOK_SECRET = "hook-token-93be7740aa21"


async def _echo(request: web.Request) -> web.Response:
    # Echoes what it received: a leak of an opened secret into the stored output would show.
    body = await request.read()
    return web.json_response({"received": json.loads(body) if body else None,
                              "headers": {k.lower(): v for k, v in request.headers.items()}})


@pytest.fixture
async def stub():
    server = StubServer()
    for path in ("/hook", "/tool"):
        server.route("POST", path, _echo)
    await server.start()
    yield server
    await server.stop()


async def _stored(task_id: str) -> tuple[list, list, object]:
    from troupe.db import models
    from troupe.db.session import session_scope

    async with session_scope() as session:
        rows = list((await session.execute(select(models.TaskExecution).where(
            models.TaskExecution.task_id == uuid.UUID(task_id)))).scalars())
        logs = list((await session.execute(select(models.Log).where(
            models.Log.task_id == uuid.UUID(task_id)))).scalars())
        task = await session.get(models.Task, uuid.UUID(task_id))
        return ([(r.node_id, r.status, r.input, r.output, r.error, r.meta) for r in rows],
                [(log.message, log.details) for log in logs], task.output if task else None)


# (template, input, a node that must complete, a node that must not run)
TEMPLATE_RUNS = [
    ("Research and summarise", {"question": "Why is the sky blue?"}, "summarise", None),
    ("Support triage", {"ticket": "My invoice is wrong"}, "reply", "escalate"),
    ("Support triage", {"ticket": "urgent: checkout is down for every customer"}, "escalate", "reply"),
    ("Content pipeline", {"topic": "actor models"}, "edit", None),
    ("Webhook notify", {"event": "deployed", "version": 3}, "notify", None),
]


async def test_every_builtin_template_runs_to_completion(client, user, stub):
    templates = assert_ok(await client.get("/api/workflows/templates?limit=100", headers=user.headers))
    by_name = {t["name"]: t for t in templates}
    assert {run[0] for run in TEMPLATE_RUNS} <= set(by_name)
    company = {"id": await make_company(user.id)}
    for name, input_, last_node, skipped_node in TEMPLATE_RUNS:
        workflow = assert_ok(await client.post("/api/workflows", headers=user.headers, json={
            "companyId": company["id"], "templateId": by_name[name]["id"], "status": "active"}), 201)
        assert workflow["nodes"] == by_name[name]["nodes"]
        variables = {"webhookUrl": f"{stub.url}/hook"} if name == "Webhook notify" else None
        task_id = await run_workflow(client, user, company["id"], workflow["id"], input_, variables=variables)
        task = await wait_status(client, user, task_id, timeout=60)
        assert task["status"] == "completed", (name, task.get("error"))
        rows = await executions(client, user, task_id)
        done = {r["nodeId"] for r in rows if r["status"] == "completed"}
        assert last_node in done and "output" in done, (name, done)
        assert skipped_node not in done, (name, done)
        agents = [r for r in rows if r["status"] == "completed" and r["nodeId"] in
                  {n["id"] for n in workflow["nodes"] if n["type"] == "agent"}]
        for row in agents:  # inline agents ran through the simulated provider, labelled as such
            assert row["output"]["simulated"] is True and row["output"]["text"].startswith("[simulated]")
            assert row["output"]["provider"] == "simulated"
        if name == "Webhook notify":
            sent = [r for r in stub.received if r.path == "/hook"]
            assert len(sent) == 1 and sent[0].json() == input_
            assert sent[0].headers["idempotency-key"] == f"{task_id}:notify:0"
            assert task["output"]["status"] == 200
        if name == "Content pipeline":
            loop = next(r for r in rows if r["nodeId"] == "sections" and r["status"] == "completed")
            assert loop["output"]["iterations"] >= 1
            assert sum(1 for r in rows if r["nodeId"] == "write" and r["status"] == "completed") == \
                loop["output"]["iterations"]


async def test_sealed_secrets_are_opened_only_for_the_outbound_call(client, user, stub):
    company = {"id": await make_company(user.id)}
    tool = assert_ok(await client.post("/api/tools", headers=user.headers, json={
        "name": f"echo-{uuid.uuid4().hex[:6]}", "description": "echo", "type": "api", "category": "integration",
        "configuration": {"endpoint": f"{stub.url}/tool", "method": "POST",
                          "authentication": {"type": "api_key", "credentials": {"apiKey": TOOL_SECRET}}},
        "schema": {"input": {"type": "object", "properties": {"q": {"type": "string"}}}}}), 201)
    assert tool["configuration"]["authentication"]["credentials"]["apiKey"] == "********"
    nodes = [node("input", "input"),
             node("lookup", "tool", toolId=tool["id"], input={"q": "{{input.q}}"}),
             node("hook", "webhook", url=f"{stub.url}/hook",
                  headers={"X-Hook-Token": "{{secrets.hookToken}}", "Authorization": "Bearer {{secrets.hookToken}}"},
                  body={"tool": "{{nodes.lookup.output.status}}"}),
             node("output", "output")]
    workflow = assert_ok(await client.post("/api/workflows", headers=user.headers, json={
        "companyId": company["id"], "name": "secrets", "status": "active", "nodes": nodes,
        "edges": chain("input", "lookup", "hook", "output"),
        "configuration": {"strategy": "sequential", "secrets": {"hookToken": HOOK_SECRET}}}), 201)
    task_id = await run_workflow(client, user, company["id"], workflow["id"], {"q": "weather"})
    task = await wait_status(client, user, task_id)
    assert task["status"] == "completed", task.get("error")

    # The receivers saw the secrets in clear ...
    tool_req = next(r for r in stub.received if r.path == "/tool")
    hook_req = next(r for r in stub.received if r.path == "/hook")
    assert tool_req.headers["x-api-key"] == TOOL_SECRET
    assert tool_req.json() == {"q": "weather"}
    assert hook_req.headers["x-hook-token"] == HOOK_SECRET
    assert hook_req.headers["authorization"] == f"Bearer {HOOK_SECRET}"
    assert hook_req.headers["idempotency-key"] == f"{task_id}:hook:0"

    # ... but nothing stored (executions, logs, the task's output) holds them, though the server echoed them back.
    rows, logs, output = await _stored(task_id)
    stored = json.dumps([rows, logs, output], default=str)
    assert TOOL_SECRET not in stored and HOOK_SECRET not in stored
    assert "enc:v1:" not in stored
    hook_row = next(r for r in rows if r[0] == "hook" and r[1] == "completed")
    assert hook_row[2]["headers"]["X-Hook-Token"] == "********"
    assert hook_row[3]["body"]["headers"]["x-hook-token"] == "********"
    tool_row = next(r for r in rows if r[0] == "lookup" and r[1] == "completed")
    assert tool_row[3]["body"]["headers"]["x-api-key"] == "********"


async def test_webhook_is_not_resent_by_a_retried_run(client, user, stub):
    company_id = await make_company(user.id)
    workflow_id = await make_workflow(company_id, user.id, [
        node("input", "input"), node("hook", "webhook", url=f"{stub.url}/hook", body={"n": "{{input.n}}"}),
        node("after", "output", value={"hook": "{{nodes.hook.output.status}}"})],
        chain("input", "hook", "after"), strategy="sequential")
    task_id = await run_workflow(client, user, company_id, workflow_id, {"n": 7})
    assert (await wait_status(client, user, task_id))["status"] == "completed"
    assert len([r for r in stub.received if r.path == "/hook"]) == 1

    # Re-running from the webhook step re-executes the node, but the receiver gets nothing new.
    assert_ok(await client.post(f"/api/tasks/{task_id}/retry", headers=user.headers, json={"fromStep": "hook"}), 202)
    task = await wait_status(client, user, task_id)
    assert task["status"] == "completed" and task["output"] == {"hook": 200}
    sent = [r for r in stub.received if r.path == "/hook"]
    assert len(sent) == 1 and sent[0].headers["idempotency-key"] == f"{task_id}:hook:0"
    rows = await executions(client, user, task_id)
    hooks = [r for r in rows if r["nodeId"] == "hook"]
    assert [r["status"] for r in sorted(hooks, key=lambda r: r["startedAt"])] == ["skipped", "completed"]
    assert next(r for r in hooks if r["status"] == "completed")["output"]["duplicate"] is True


async def test_webhook_failure_is_retried_and_resent_until_delivered(client, user):
    server = StubServer()
    calls = {"n": 0}

    async def flaky(request: web.Request) -> web.Response:
        calls["n"] += 1
        return web.json_response({"ok": calls["n"] > 1}, status=503 if calls["n"] == 1 else 200)

    server.route("POST", "/flaky", flaky)
    await server.start()
    try:
        company_id = await make_company(user.id)
        workflow_id = await make_workflow(company_id, user.id, [
            node("input", "input"), node("hook", "webhook", url=f"{server.url}/flaky", retries=2),
            node("output", "output")], chain("input", "hook", "output"), retryPolicy={"maxRetries": 2, "initialDelay": 0.05})
        task_id = await run_workflow(client, user, company_id, workflow_id, {"x": 1})
        task = await wait_status(client, user, task_id)
    finally:
        await server.stop()
    assert task["status"] == "completed"
    keys = {r.headers["idempotency-key"] for r in server.received}
    assert len(server.received) == 2 and keys == {f"{task_id}:hook:0"}


@pytest.mark.parametrize("url", ["http://10.0.0.1/hook", "http://169.254.169.254/latest/meta-data/"])
async def test_webhook_to_a_private_address_is_refused(client, user, url):
    company_id = await make_company(user.id)
    workflow_id = await make_workflow(company_id, user.id, [
        node("input", "input"), node("hook", "webhook", url=url, timeout=5), node("output", "output")],
        chain("input", "hook", "output"))
    task_id = await run_workflow(client, user, company_id, workflow_id, {})
    task = await wait_status(client, user, task_id)
    assert task["status"] == "failed"
    assert task["error"]["code"] == "BIZ_003" and "destination not allowed" in task["error"]["message"]
    rows = await executions(client, user, task_id)
    hook = [r for r in rows if r["nodeId"] == "hook"]
    assert hook and all(r["status"] == "failed" and r["error"].startswith("BIZ_003") for r in hook), hook
