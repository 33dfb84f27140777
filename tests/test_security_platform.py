"""Issue 10, findings 2-7 (first two bullets): one test per finding, against the
running service (Postgres, Redis, Ray, HTTP)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from typing import Any

import httpx

from tests.auth_helpers import fill_window, fresh_ip
from tests.test_realtime import connected
from tests.utils.engine import edge, executions, make_tool, make_workflow, node, wait_status
from tests.utils.fixtures import PASSWORD, assert_error, assert_ok

SEALED_MARK = "enc:v1:"


async def tenant(owner_id: str, members: dict[str, str] | None = None) -> str:
    """A company owned by ``owner_id`` with ``members`` ({user id: "member" | "viewer"})."""
    from troupe.db import models
    from troupe.db.session import session_scope

    members = members or {}
    async with session_scope() as session:
        company = models.Company(name=f"co-{uuid.uuid4().hex[:6]}", type="software", owner_id=uuid.UUID(owner_id),
                                 status="active", team_members=[uuid.UUID(m) for m in members],
                                 member_roles=members, settings={"maxConcurrency": 5}, metrics={})
        session.add(company)
        await session.flush()
        return str(company.id)


async def agent_in(company_id: str, owner_id: str, *, public: bool = False, **config: Any) -> str:
    from troupe.db import models
    from troupe.db.session import session_scope

    async with session_scope() as session:
        agent = models.Agent(name=f"ag-{uuid.uuid4().hex[:6]}", type="custom", model="sim-1", provider="simulated",
                             configuration=config, company_id=uuid.UUID(company_id), created_by=uuid.UUID(owner_id),
                             performance={}, is_public=public)
        session.add(agent)
        await session.flush()
        return str(agent.id)


async def count(model_name: str, **where: Any) -> int:
    from sqlalchemy import func, select

    from troupe.db import models
    from troupe.db.session import session_scope

    model = getattr(models, model_name)
    async with session_scope() as session:
        query = select(func.count()).select_from(model)
        for column, value in where.items():
            query = query.where(getattr(model, column) == value)
        return int(await session.scalar(query) or 0)


# --------------------------------------------------------------------------- finding 2


async def test_duplicate_needs_update_rights_and_never_copies_secrets(client, user_factory, admin):
    from sqlalchemy import select

    from troupe.db import models
    from troupe.db.session import session_scope
    from troupe.security import SecretBox

    owner, member, viewer, stranger = [await user_factory("user") for _ in range(4)]
    cid = await tenant(owner.id, {member.id: "member", viewer.id: "viewer"})
    box = SecretBox()
    await agent_in(cid, owner.id, apiKey=box.seal("sk-agent-secret"), temperature=0.3)
    tool = await make_tool(owner.id)
    async with session_scope() as session:
        session.add(models.CompanyTool(company_id=uuid.UUID(cid), tool_id=uuid.UUID(tool), installed_by=uuid.UUID(owner.id),
                                       configuration={"apiToken": box.seal("install-secret"), "region": "eu"}))
        session.add(models.Workflow(
            name="Hook", company_id=uuid.UUID(cid), created_by=uuid.UUID(owner.id), status="active", edges=[],
            nodes=[{"id": "w", "type": "webhook", "position": {"x": 0, "y": 0},
                    "data": {"label": "W", "configuration": {
                        "url": "https://example.com/hook",
                        "headers": {"Authorization": box.seal("Bearer node-secret"), "X-Trace": "1"}}}}],
            configuration={"secrets": {"TOKEN": box.seal("workflow-secret")}, "variables": {"x": 1}}))

    # Read-only roles may not take a copy; a stranger does not see the company at all. Nothing is written.
    for caller, status, code in ((viewer, 403, "AUTH_004"), (member, 403, "AUTH_004"), (stranger, 404, "RES_001")):
        assert_error(await client.post(f"/api/companies/{cid}/duplicate", json={"name": "Stolen"},
                                       headers=caller.headers), status, code)
    assert await count("Company", name="Stolen") == 0

    response = await client.post(f"/api/companies/{cid}/duplicate", json={"name": "Copy"}, headers=owner.headers)
    copy = assert_ok(response, 201)
    for secret in ("sk-agent-secret", "install-secret", "node-secret", "workflow-secret", SEALED_MARK):
        assert secret not in response.text
    flagged = {r["kind"]: r["fields"] for r in copy["needsReentry"]}
    assert flagged == {"agent": ["configuration.apiKey"], "toolInstall": ["configuration.apiToken"],
                       "workflow": ["nodes[0].data.configuration.headers.Authorization",
                                    "configuration.secrets.TOKEN"]}
    async with session_scope() as session:
        copy_id = uuid.UUID(copy["id"])
        rows = [*(await session.execute(select(models.Agent).where(models.Agent.company_id == copy_id))).scalars(),
                *(await session.execute(select(models.CompanyTool).where(
                    models.CompanyTool.company_id == copy_id))).scalars(),
                *(await session.execute(select(models.Workflow).where(
                    models.Workflow.company_id == copy_id))).scalars()]
    stored = json.dumps([{k: v for k, v in vars(r).items() if not k.startswith("_")} for r in rows], default=str)
    assert len(rows) == 3 and SEALED_MARK not in stored
    workflow = next(r for r in rows if isinstance(r, models.Workflow))
    assert workflow.configuration["secrets"] == {"TOKEN": ""}  # the name stays: it is to be entered again
    assert workflow.nodes[0]["data"]["configuration"]["headers"] == {"X-Trace": "1"}
    assert next(r for r in rows if isinstance(r, models.CompanyTool)).configuration == {"region": "eu"}
    # An administrator may copy any tenant's company (update rights through the role).
    assert_ok(await client.post(f"/api/companies/{cid}/duplicate", json={"name": "Admin copy"},
                                headers=admin.headers), 201)


# --------------------------------------------------------------------------- finding 3


async def test_public_agent_memory_and_activity_stay_with_each_caller(client, base_url, user_factory):
    a_owner, b_owner = await user_factory("user"), await user_factory("user")
    a_company, b_company = await tenant(a_owner.id), await tenant(b_owner.id)
    agent = await agent_in(a_company, a_owner.id, public=True)

    async def a_test(text: str, conversation: str) -> str:
        return assert_ok(await client.post(f"/api/agents/{agent}/test", headers=a_owner.headers,
                                           json={"input": text, "conversationId": conversation}))["output"]

    async def keep_warm() -> None:
        while True:
            await asyncio.sleep(3)
            await a_test("keep warm", "warm")

    a_sess, a_ws = await connected(base_url, a_owner.token)
    b_sess, b_ws = await connected(base_url, b_owner.token)
    try:
        for ws, room in ((a_ws, f"company:{a_company}"), (a_ws, f"agent:{agent}"), (b_ws, f"company:{b_company}")):
            assert (await ws.request("join_room", {"room": room}))["type"] == "join_room"
        await a_test("alpha: the first tenant's private words", "c1")
        got = await a_ws.expect("agent:activity", wait=60)
        assert got["companyId"] == a_company
        assert not [m for m in await b_ws.quiet(1.0) if m["type"] == "agent:activity"]

        # The second tenant uses the public agent from its own workflow.
        workflow = await make_workflow(b_company, b_owner.id, [
            node("input", "input"), node("ask", "agent", agentId=agent, prompt="hello from the second tenant"),
            node("output", "output")], [edge("input", "ask"), edge("ask", "output")], strategy="sequential")
        task = assert_ok(await client.post("/api/tasks", headers=b_owner.headers, json={
            "name": "use", "type": "workflow", "companyId": b_company, "workflowId": workflow, "input": {}}), 201)
        assert_ok(await client.post(f"/api/tasks/{task['id']}/execute", headers=b_owner.headers, json={}), 202)
        # Memory lives in the agent's actor, which leaves when idle (TROUPE_ACTOR_IDLE_TIMEOUT):
        # keep it bound (in a conversation of its own) until the second tenant's call has run.
        warm = asyncio.create_task(keep_warm())
        try:
            assert (await wait_status(client, b_owner, task["id"], timeout=120))["status"] == "completed"
        finally:
            warm.cancel()
        b_output = next(r for r in await executions(client, b_owner, task["id"]) if r["nodeId"] == "ask")["output"]

        b_events = [m for m in await b_ws.quiet(3.0) if m["type"] == "agent:activity"]
        assert b_events and all(m["companyId"] == b_company for m in b_events)
        assert any("second tenant" in json.dumps(m["payload"]) for m in b_events)
        a_seen = json.dumps([m for m in a_ws.seen + await a_ws.quiet(1.0)])
        assert "second tenant" not in a_seen and task["id"] not in a_seen
    finally:
        await a_sess.__aexit__(None, None, None)
        await b_sess.__aexit__(None, None, None)

    # The second tenant's prompt carried none of the first tenant's memory: it is exactly
    # what a fresh conversation with the same words gets (the simulated reply hashes the prompt).
    fresh = await a_test("hello from the second tenant", f"fresh-{uuid.uuid4().hex}")
    assert b_output["text"] == fresh
    # And the first tenant's conversation holds only its own exchanges.
    continued = await a_test("beta", "c1")
    replay = f"replay-{uuid.uuid4().hex}"
    await a_test("alpha: the first tenant's private words", replay)
    assert await a_test("beta", replay) == continued
    # The publisher sees the second tenant's use only as counters.
    performance = assert_ok(await client.get(f"/api/agents/{agent}/performance", headers=a_owner.headers))
    assert "second tenant" not in json.dumps(performance)


# --------------------------------------------------------------------------- finding 4


async def test_running_agents_and_tools_needs_the_execute_right(client, user_factory, admin, viewer):
    from troupe.db import models
    from troupe.db.session import session_scope

    owner, member, company_viewer, stranger = [await user_factory("user") for _ in range(4)]
    cid = await tenant(owner.id, {member.id: "member", company_viewer.id: "viewer"})
    agent = await agent_in(cid, owner.id, public=True)
    tool = await make_tool(owner.id)
    async with session_scope() as session:
        tool_row = await session.get(models.Tool, uuid.UUID(tool))
        tool_row.is_public = True
        session.add(models.CompanyTool(company_id=uuid.UUID(cid), tool_id=tool_row.id,
                                       installed_by=uuid.UUID(owner.id), configuration={}))
    body = {"input": {"expression": "6*7"}}

    for caller in (company_viewer, stranger, viewer):
        assert_error(await client.post(f"/api/agents/{agent}/test", json={"input": "hi"}, headers=caller.headers),
                     403, "AUTH_004")
        assert_error(await client.post(f"/api/tools/{tool}/test", json=body, headers=caller.headers), 403, "AUTH_004")
    assert await count("ToolCall", tool_id=uuid.UUID(tool)) == 0

    for caller in (owner, member, admin):
        assert_ok(await client.post(f"/api/agents/{agent}/test", json={"input": "hi"}, headers=caller.headers))
        result = assert_ok(await client.post(f"/api/tools/{tool}/test", json=body, headers=caller.headers))
        assert result["output"] == {"result": 42}
    assert await count("ToolCall", tool_id=uuid.UUID(tool)) == 3


# --------------------------------------------------------------------------- finding 5

HOSTILE = ["(9**999)**999**999", "9**999**999", "factorial(100000)", "factorial(-1)", "1" * 400,
           "10**999 / 3", "2.0**100000", "round(1, -10**99)", "(-8)**0.5", "1e308 * 10"]


async def test_calculator_refuses_huge_work_quickly_and_health_stays_responsive(client, user):
    tool = await make_tool(user.id)

    async def calc(expression: str) -> httpx.Response:
        return await client.post(f"/api/tools/{tool}/test", json={"input": {"expression": expression}},
                                 headers=user.headers)

    for expression in HOSTILE:
        started = time.monotonic()
        error = assert_error(await calc(expression), 422, "VAL_001", "input.expression")
        assert error["message"].startswith("calculator: ") and time.monotonic() - started < 2, (expression, error)
    assert assert_ok(await calc("factorial(5) + 9**2"))["output"] == {"result": 201}
    assert await count("ToolCall", tool_id=uuid.UUID(tool)) == 1  # refusals record nothing

    async def health() -> float:
        started = time.monotonic()
        assert (await client.get("/api/settings/health")).status_code in (200, 503)
        return time.monotonic() - started

    # Three hostile requests at once, three times: each refused, and health answered meanwhile.
    # Before the bounds one such request held the replica for 30 s; the best of three rounds
    # keeps a loaded test machine's noise out of the measure.
    latencies = []
    for _ in range(3):
        results = await asyncio.gather(*(calc(e) for e in HOSTILE[:3]), health())
        assert all(r.status_code == 422 for r in results[:3])
        latencies.append(results[3])
    assert min(latencies) < 1.0 and max(latencies) < 10, latencies


async def test_calculator_bounds_directly():
    import pytest

    from troupe.engine.calculator import CalculatorError, calculate

    assert calculate("2*(3+4)") == 14 and calculate("9**999") == 9**999 and calculate("factorial(10)") == 3628800
    for expression in [*HOSTILE, "x+1", "__import__('os')", "(" * 300 + "1" + ")" * 300, "+".join(["1"] * 150)]:
        with pytest.raises(CalculatorError):
            calculate(expression)


# --------------------------------------------------------------------------- finding 6


def test_client_ip_trusts_forwarded_for_only_from_configured_proxies():
    from troupe.platform.middleware import client_ip, trusted_networks
    from troupe.platform.ratelimit import LocalLimiter

    proxies = trusted_networks(["10.0.0.0/8", "127.0.0.1/32"])
    assert client_ip("203.0.113.5", "1.2.3.4", proxies) == "203.0.113.5"  # not a proxy: header ignored
    assert client_ip("10.0.0.2", "1.2.3.4", ()) == "10.0.0.2"  # no proxies configured
    assert client_ip("10.0.0.2", "6.6.6.6, 198.51.100.7", proxies) == "198.51.100.7"  # right-most untrusted
    assert client_ip("10.0.0.2", "6.6.6.6, 198.51.100.7, 10.1.1.1", proxies) == "198.51.100.7"
    assert client_ip("10.0.0.2", "", proxies) == "10.0.0.2"
    assert client_ip("10.0.0.2", "not-an-ip, 10.1.1.1", proxies) == "10.1.1.1"

    limiter = LocalLimiter(max_keys=2)
    decisions = [limiter.hit("k", limit=3, window_seconds=60, now=100.0 + i) for i in range(4)]
    assert [d.allowed for d in decisions] == [True, True, True, False] and decisions[3].retry_after_seconds == 57
    assert limiter.hit("k", limit=3, window_seconds=60, now=161.0).allowed  # the window slid
    limiter.hit("a", limit=1, window_seconds=60, now=0)
    limiter.hit("b", limit=1, window_seconds=60, now=0)
    assert set(limiter.windows) == {"a", "b"}  # bounded: the least recently used key went


async def test_forged_forwarded_for_does_not_escape_the_login_limit(stack):
    """50 failed logins, each with its own X-Forwarded-For, from a peer that is not a trusted
    proxy: the header is ignored and all of them count against the peer's login limit
    (TROUPE_AUTH_RATE_PER_IP). The app runs in this process (real Postgres and Redis) so the
    test chooses the socket peer; behind Serve every peer is Serve's own front door."""
    from troupe.config import get_settings
    from troupe.platform.app import create_app
    from troupe.platform.auth.service import ip_key

    assert get_settings().trusted_proxies == ["127.0.0.1/32"]  # tests/conftest.py
    limit = get_settings().auth_rate_limit_per_ip
    app = create_app()

    def peer(address: str) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url="http://troupe.test", timeout=60,
                                 transport=httpx.ASGITransport(app=app, client=(address, 40000)))

    async def attempt(http: httpx.AsyncClient, forwarded: str) -> httpx.Response:
        return await http.post("/api/auth/login", headers={"X-Forwarded-For": forwarded}, json={
            "email": f"nobody-{uuid.uuid4().hex}@example.com", "password": "Wrong!Passw0rd"})

    # The peer has already spent all but 5 attempts of its window (each failed login costs a
    # bcrypt check; 30 of them on a loaded test machine may outlast the window and make this
    # test measure the clock). Every one of the 50 counts for it, whatever it forwards.
    untrusted_peer = f"192.0.2.{uuid.uuid4().int % 250 + 1}"
    await fill_window(ip_key("login", untrusted_peer), limit - 5)
    async with peer(untrusted_peer) as untrusted:
        responses = [await attempt(untrusted, fresh_ip()["X-Forwarded-For"]) for _ in range(50)]
    statuses = [r.status_code for r in responses]
    assert statuses == [401] * 5 + [429] * 45, [(r.status_code, r.text[:200]) for r in responses
                                                if r.status_code not in (401, 429)] or statuses
    assert {r.json()["error"]["code"] for r in responses[5:]} == {"SYS_004"}

    # Through a trusted proxy the right-most untrusted hop is the client (what the client wrote
    # to its left does not matter): its own full window refuses it.
    forwarded = fresh_ip()["X-Forwarded-For"]
    await fill_window(ip_key("login", forwarded), limit)
    async with peer("127.0.0.1") as proxy:
        assert_error(await attempt(proxy, f"203.0.113.99, {forwarded}"), 429, "SYS_004")
        assert_error(await attempt(proxy, f"{forwarded}, 203.0.113.98"), 401, "AUTH_006")


# --------------------------------------------------------------------------- finding 7


def test_database_password_travels_in_the_environment():
    from troupe.platform.system.backup import _libpq_target

    url, env = _libpq_target("postgresql+psycopg://troupe:p%40ss%3Aword@db.internal:5432/troupe?sslmode=require")
    assert url == "postgresql://troupe@db.internal:5432/troupe?sslmode=require"
    assert env == {"PGPASSWORD": "p@ss:word"}
    url, env = _libpq_target("postgresql://troupe@db/troupe?password=hunter2&sslmode=disable")
    assert "hunter2" not in url and env == {"PGPASSWORD": "hunter2"}
    assert _libpq_target("postgresql://troupe@/troupe?host=/run/pg") == ("postgresql://troupe@/troupe?host=/run/pg", {})


async def test_create_admin_reads_the_password_from_stdin_never_argv(client, stack):
    email = f"root-{uuid.uuid4().hex[:8]}@example.com"
    command = [sys.executable, "-m", "troupe", "create-admin", "--email", email]
    refused = await asyncio.to_thread(subprocess.run, [*command, "--password", PASSWORD], capture_output=True,
                                      text=True, env=os.environ.copy(), timeout=120)
    assert refused.returncode != 0 and "--password is not accepted" in refused.stderr
    assert await count("User", email=email) == 0
    created = await asyncio.to_thread(subprocess.run, [*command, "--password-stdin"], input=PASSWORD + "\n",
                                      capture_output=True, text=True, env=os.environ.copy(), timeout=120)
    assert created.returncode == 0, created.stderr
    data = assert_ok(await client.post("/api/auth/login", json={"email": email, "password": PASSWORD},
                                       headers=fresh_ip()))
    assert data["user"]["role"] == "super_admin"
