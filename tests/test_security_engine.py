"""Issue 10, engine side: the deployment's provider keys, sealed inline keys, execute-time
variables and once-only side effects (findings 1, 7, 8, 9, 10), one test per finding.

Runs through the real API and Ray where the worker environment allows it. Where a test
needs a deployment setting the session's Ray workers do not have (a server OPENAI_API_KEY,
an SMTP host), it calls the node handler in this process (on a worker thread, as a node
task runs it) with that setting, against real Redis and real local servers."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from aiohttp import web
from sqlalchemy import func, select

from tests.utils.engine import chain, executions, make_company, make_workflow, node, wait_status
from tests.utils.fixtures import assert_error, assert_ok
from tests.utils.stub_http import StubServer
from troupe.engine.contract import NodeSpec, ToolSpec
from troupe.engine.nodes import handler_for
from troupe.security import SecretBox

OPENAI_OK = {
    "id": "chatcmpl-1", "object": "chat.completion", "created": 1700000000, "model": "gpt-4o-mini",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "4"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12},
}
SERVER_KEY = "sk-deployment-7d2f01c4"
USER_KEY = "sk-tenant-own-5be390aa"


@pytest.fixture
async def llm():
    """An OpenAI-compatible server on loopback that records what it receives."""
    async def answer(request: web.Request) -> web.Response:
        return web.json_response(OPENAI_OK)

    server = StubServer()
    server.route("POST", "/v1/chat/completions", answer)
    await server.start()
    yield server
    await server.stop()


def _spec(type_: str, config: dict, *, key: str | None = None, attempt: int = 0,
          tool: ToolSpec | None = None) -> NodeSpec:
    return NodeSpec(type=type_, node_id="n", task_id=str(uuid.uuid4()), config=config, context={"prev": "hi"},
                    company_id=str(uuid.uuid4()), attempt=attempt, timeout=20, idempotency_key=key, tool=tool)


async def _run_handler(spec: NodeSpec):
    # A node task runs its handler on a thread of its own (each handler starts its own event loop).
    return await asyncio.to_thread(handler_for(spec.type), spec)


async def _workflow(client, user, company: str, nodes: list, edges: list, **configuration) -> dict:
    return assert_ok(await client.post("/api/workflows", headers=user.headers, json={
        "companyId": company, "name": f"sec-{uuid.uuid4().hex[:6]}", "status": "active", "nodes": nodes,
        "edges": edges, "configuration": {"strategy": "sequential", **configuration}}), 201)


async def _stored_nodes(workflow_id: str) -> list:
    from troupe.db import models
    from troupe.db.session import session_scope

    async with session_scope() as session:
        return (await session.get(models.Workflow, uuid.UUID(workflow_id))).nodes


# ---- finding 1 -------------------------------------------------------------------------------------------

async def test_deployment_key_never_goes_to_a_user_chosen_base_url(client, user, llm, settings):
    from troupe.providers.registry import operator_url

    # Through the engine: an inline node pointing at a host the user picked, with no key of its own.
    company = await make_company(user.id)
    inline = {"provider": "openai", "model": "gpt-4o", "baseUrl": f"{llm.url}/v1", "prompt": "2+2?"}
    workflow = await _workflow(client, user, company, [node("in", "input"), node("ask", "agent", **inline),
                                                       node("out", "output")], chain("in", "ask", "out"))
    run = assert_ok(await client.post(f"/api/workflows/{workflow['id']}/execute", headers=user.headers,
                                      json={"input": {}}), 202)
    task = await wait_status(client, user, run["id"])
    assert task["status"] == "failed" and task["error"]["code"] == "BIZ_002", task["error"]
    assert "apiKey" in task["error"]["message"] and "never sent" in task["error"]["message"]
    assert llm.received == []

    # In a node task whose deployment has a key: still never sent to that host ...
    settings(openai_api_key=SERVER_KEY, openai_base_url=None, provider_base_urls={})
    result = await _run_handler(_spec("agent", inline))
    assert (result.ok, result.code, result.retryable) == (False, "BIZ_002", False)
    assert llm.received == []
    # ... the tenant's own (sealed) key is what goes there ...
    result = await _run_handler(_spec("agent", {**inline, "apiKey": SecretBox().seal(USER_KEY)}))
    assert result.ok, result.message
    assert [r.headers["authorization"] for r in llm.received] == [f"Bearer {USER_KEY}"]
    # ... and the deployment's key only reaches a base URL the administrator configured.
    settings(provider_base_urls={"openai": [f"{llm.url}/v1"]})
    result = await _run_handler(_spec("agent", inline))
    assert result.ok, result.message
    assert llm.received[-1].headers["authorization"] == f"Bearer {SERVER_KEY}"
    assert all(SERVER_KEY not in r.headers.get("authorization", "") for r in llm.received[:-1])

    assert operator_url("openai", "https://api.openai.com/v1", None)
    for lookalike in ("https://api.openai.com.evil.example/v1", "http://api.openai.com/v1",
                      "https://api.openai.com:8443/v1", f"{llm.url}/v2", f"{llm.url}/v1evil"):
        assert not operator_url("openai", lookalike, None), lookalike


# ---- finding 7 (third bullet) ------------------------------------------------------------------------------

async def test_inline_api_key_is_sealed_masked_kept_and_opened_only_by_the_node(client, user, llm):
    company = await make_company(user.id)
    ask = node("ask", "agent", provider="openai", model="gpt-4o", baseUrl=f"{llm.url}/v1", apiKey=USER_KEY,
               prompt="2+2?")
    nodes, edges = [node("in", "input"), ask, node("out", "output")], chain("in", "ask", "out")
    created = await _workflow(client, user, company, nodes, edges)
    assert created["nodes"][1]["data"]["configuration"]["apiKey"] == "********"
    stored = (await _stored_nodes(created["id"]))[1]["data"]["configuration"]["apiKey"]
    assert SecretBox.is_sealed(stored) and SecretBox().open(stored) == USER_KEY
    read = assert_ok(await client.get(f"/api/workflows/{created['id']}", headers=user.headers))
    assert USER_KEY not in json.dumps(read) and "enc:v1:" not in json.dumps(read)

    # Sending the masked value back keeps the sealed key; a mask with nothing stored, or a sealed
    # value this workflow does not hold, is refused and writes nothing.
    updated = assert_ok(await client.put(f"/api/workflows/{created['id']}", headers=user.headers,
                                         json={"nodes": read["nodes"]}))
    assert updated["nodes"][1]["data"]["configuration"]["apiKey"] == "********"
    assert (await _stored_nodes(created["id"]))[1]["data"]["configuration"]["apiKey"] == stored
    renamed = json.loads(json.dumps(read["nodes"]))
    renamed[1]["id"] = "ask2"
    assert_error(await client.put(f"/api/workflows/{created['id']}", headers=user.headers,
                                  json={"nodes": renamed}), 422, "VAL_001",
                 field="nodes[1].data.configuration.apiKey")
    foreign = json.loads(json.dumps(read["nodes"]))
    foreign[1]["data"]["configuration"]["apiKey"] = SecretBox().seal("someone-elses-key")
    assert_error(await client.put(f"/api/workflows/{created['id']}", headers=user.headers,
                                  json={"nodes": foreign}), 422, "VAL_001", field="nodes[1]")
    assert (await _stored_nodes(created["id"]))[1]["data"]["configuration"]["apiKey"] == stored

    # Exports carry no key; importing the export back keeps the stored one.
    exported = assert_ok(await client.post(f"/api/workflows/{created['id']}/export", headers=user.headers))
    assert "apiKey" not in exported["workflow"]["nodes"][1]["data"]["configuration"]
    assert "enc:v1:" not in json.dumps(exported)
    assert_ok(await client.post(f"/api/workflows/{created['id']}/import", headers=user.headers,
                                json={"data": exported, "overwrite": True}))
    assert (await _stored_nodes(created["id"]))[1]["data"]["configuration"]["apiKey"] == stored

    # A key stored in clear before keys were sealed reads masked too, and is sealed when kept.
    legacy = await make_workflow(company, user.id, [node("in", "input"), node(
        "ask", "agent", provider="openai", model="gpt-4o", apiKey=USER_KEY)], chain("in", "ask"), status="draft")
    old = assert_ok(await client.get(f"/api/workflows/{legacy}", headers=user.headers))
    assert old["nodes"][1]["data"]["configuration"]["apiKey"] == "********" and USER_KEY not in json.dumps(old)
    assert_ok(await client.put(f"/api/workflows/{legacy}", headers=user.headers, json={"nodes": old["nodes"]}))
    kept = (await _stored_nodes(legacy))[1]["data"]["configuration"]["apiKey"]
    assert SecretBox.is_sealed(kept) and SecretBox().open(kept) == USER_KEY

    # The node task opens it for the call; the recorded input shows the mask.
    run = assert_ok(await client.post(f"/api/workflows/{created['id']}/execute", headers=user.headers,
                                      json={"input": {}}), 202)
    task = await wait_status(client, user, run["id"])
    assert task["status"] == "completed", task.get("error")
    assert llm.received[-1].headers["authorization"] == f"Bearer {USER_KEY}"
    row = next(r for r in await executions(client, user, run["id"]) if r["nodeId"] == "ask")
    assert row["input"]["apiKey"] == "********"


# ---- finding 8 ---------------------------------------------------------------------------------------------

async def test_execute_may_override_only_declared_variables(client, user):
    from troupe.db import models
    from troupe.db.session import session_scope

    company = await make_company(user.id)
    workflow = await _workflow(
        client, user, company,
        [node("in", "input"), node("out", "output", value={"hook": "{{vars.hookUrl}}", "hi": "{{vars.greeting}}"})],
        chain("in", "out"), variables={"hookUrl": "https://hooks.example.com/mine", "greeting": "hello"},
        overridableVariables=["greeting"])
    assert workflow["configuration"]["overridableVariables"] == ["greeting"]

    async def tasks_of_workflow() -> int:
        async with session_scope() as session:
            return (await session.execute(select(func.count()).select_from(models.Task).where(
                models.Task.workflow_id == uuid.UUID(workflow["id"])))).scalar_one()

    # Not declared: refused, naming the variable, and no run is created.
    error = assert_error(await client.post(f"/api/workflows/{workflow['id']}/execute", headers=user.headers, json={
        "variables": {"hookUrl": "https://attacker.example/x", "greeting": "hey"}}), 422, "VAL_001",
        field="variables.hookUrl")
    assert "hookUrl" in error["message"] and "overridableVariables" in error["message"]
    assert await tasks_of_workflow() == 0
    task = assert_ok(await client.post("/api/tasks", headers=user.headers, json={
        "name": "t", "type": "workflow", "companyId": company, "workflowId": workflow["id"]}), 201)
    assert_error(await client.post(f"/api/tasks/{task['id']}/execute", headers=user.headers,
                                   json={"variables": {"hookUrl": "https://attacker.example/x"}}), 422, "VAL_001",
                 field="variables.hookUrl")
    assert assert_ok(await client.get(f"/api/tasks/{task['id']}", headers=user.headers))["status"] == "pending"

    # Declared (and the workflow's own value, which overrides nothing): accepted and applied.
    run = assert_ok(await client.post(f"/api/workflows/{workflow['id']}/execute", headers=user.headers, json={
        "variables": {"greeting": "hey", "hookUrl": "https://hooks.example.com/mine"}}), 202)
    done = await wait_status(client, user, run["id"])
    assert done["status"] == "completed" and done["output"] == {"hook": "https://hooks.example.com/mine",
                                                                "hi": "hey"}, done

    # The driver checks again against the workflow as it is when the run starts: a run queued
    # for later, whose variable the owner then stops letting runs set, fails with VAL_001.
    later = assert_ok(await client.post("/api/tasks", headers=user.headers, json={
        "name": "later", "type": "scheduled", "companyId": company, "workflowId": workflow["id"],
        "scheduledAt": (datetime.now(UTC) + timedelta(seconds=3)).isoformat()}), 201)
    assert_ok(await client.post(f"/api/tasks/{later['id']}/execute", headers=user.headers,
                                json={"variables": {"greeting": "hey"}}), 202)
    assert_ok(await client.put(f"/api/workflows/{workflow['id']}", headers=user.headers, json={
        "configuration": {**workflow["configuration"], "overridableVariables": []}}))
    failed = await wait_status(client, user, later["id"], timeout=60)
    assert failed["status"] == "failed" and failed["error"]["code"] == "VAL_001", failed
    assert "greeting" in failed["error"]["message"]


# ---- finding 9 ---------------------------------------------------------------------------------------------

class FlakySMTP:
    """A minimal SMTP server on loopback: refuses the first message (451), accepts the rest."""

    def __init__(self, failures: int = 1) -> None:
        self.failures = failures
        self.accepted: list[str] = []
        self.server: asyncio.AbstractServer | None = None
        self.port = 0

    async def start(self) -> FlakySMTP:
        self.server = await asyncio.start_server(self._session, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async def say(line: str) -> None:
            writer.write(f"{line}\r\n".encode())
            await writer.drain()

        await say("220 flaky ESMTP")
        try:
            while line := (await reader.readline()).decode(errors="replace").strip():
                verb = line.split(" ", 1)[0].upper()
                if verb in ("EHLO", "HELO"):
                    await say("250 flaky")
                elif verb in ("MAIL", "RCPT", "RSET", "NOOP"):
                    await say("250 OK")
                elif verb == "DATA":
                    await say("354 go ahead")
                    body = []
                    while (chunk := (await reader.readline()).decode(errors="replace")) not in (".\r\n", ""):
                        body.append(chunk)
                    if self.failures > 0:
                        self.failures -= 1
                        await say("451 try again later")
                    else:
                        self.accepted.append("".join(body))
                        await say("250 queued")
                elif verb == "QUIT":
                    await say("221 bye")
                    break
                else:
                    await say("502 not implemented")
        finally:
            writer.close()


async def test_email_retry_after_an_smtp_failure_really_sends(stack, settings):
    smtp = await FlakySMTP(failures=1).start()
    try:
        settings(smtp_host="127.0.0.1", smtp_port=smtp.port, smtp_secure=False, smtp_user=None)
        key = f"{uuid.uuid4()}:mail:0"
        config = {"to": "ops@example.com", "subject": "deploy", "body": "v3 is out"}
        first = await _run_handler(_spec("email", config, key=key, attempt=0))
        assert (first.ok, first.code, first.retryable) == (False, "SYS_003", True)
        assert smtp.accepted == []
        # The driver's next attempt sends: the failed one did not mark the message as sent.
        second = await _run_handler(_spec("email", config, key=key, attempt=1))
        assert second.ok and second.output["sent"] is True, second.message
        assert len(smtp.accepted) == 1 and "v3 is out" in smtp.accepted[0]
        # A re-run of the same node and iteration (recovery, Ray retry) does not send it again.
        for attempt in (0, 1):
            again = await _run_handler(_spec("email", config, key=key, attempt=attempt))
            assert again.ok and again.output["duplicate"] is True
        assert len(smtp.accepted) == 1
    finally:
        await smtp.stop()


# ---- finding 10 --------------------------------------------------------------------------------------------

async def test_concurrent_claims_send_a_webhook_and_an_http_tool_call_once(stack):
    calls: dict[str, int] = {}
    statuses = {"/flaky": [500]}

    async def slow(request: web.Request) -> web.Response:
        calls[request.path] = calls.get(request.path, 0) + 1
        await asyncio.sleep(0.5)  # both workers are inside their claim while this one sends
        scripted = statuses.get(request.path)
        return web.json_response({"n": calls[request.path]}, status=scripted.pop(0) if scripted else 200)

    server = StubServer()
    for path in ("/hook", "/tool", "/flaky"):
        server.route("POST", path, slow)
    await server.start()
    try:
        hook_key, tool_key = f"{uuid.uuid4()}:hook:0", f"{uuid.uuid4()}:lookup:0"
        hook = _spec("webhook", {"url": f"{server.url}/hook", "body": {"x": 1}}, key=hook_key)
        tool = _spec("tool", {"input": {"q": 1}}, key=tool_key,
                     tool=ToolSpec(id=str(uuid.uuid4()), type="api",
                                   configuration={"endpoint": f"{server.url}/tool", "method": "POST"}))
        start = threading.Barrier(4)

        def racing(spec: NodeSpec):
            start.wait()
            return handler_for(spec.type)(spec)

        results = await asyncio.gather(*(asyncio.to_thread(racing, s) for s in (hook, hook, tool, tool)))
        assert calls == {"/hook": 1, "/tool": 1}
        assert all(r.ok for r in results), [r.message for r in results]
        for pair in (results[:2], results[2:]):
            assert sorted(bool(r.output.get("duplicate")) for r in pair) == [False, True]
            assert {r.output["body"]["n"] for r in pair} == {1}
        assert [r.headers["idempotency-key"] for r in server.received if r.path != "/flaky"].count(hook_key) == 1

        # A failed delivery releases its claim: the next attempt really sends, and then no more.
        flaky_key = f"{uuid.uuid4()}:flaky:0"
        flaky = {"url": f"{server.url}/flaky", "body": {}}
        failed = await _run_handler(_spec("webhook", flaky, key=flaky_key, attempt=0))
        assert (failed.ok, failed.code) == (False, "SYS_003")
        sent = await _run_handler(_spec("webhook", flaky, key=flaky_key, attempt=1))
        assert sent.ok and not sent.output.get("duplicate")
        started = time.monotonic()
        again = await _run_handler(_spec("webhook", flaky, key=flaky_key, attempt=0))
        assert again.ok and again.output["duplicate"] is True and time.monotonic() - started < 5
        assert calls["/flaky"] == 2
    finally:
        await server.stop()
