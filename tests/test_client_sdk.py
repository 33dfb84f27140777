"""The Python SDK (troupe.client) against the running stack: every resource family, transparent
token refresh, run_batch of 500 inputs with failures (sync) and of 200 in chunks (async), and
the batch endpoint's execute: true being all or nothing."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.utils.engine import chain, make_company, make_workflow, node
from troupe.client import AsyncClient, Client, ItemResult, TroupeError, watch

FAIL_EVERY = 37  # inputs whose index % FAIL_EVERY == 5 fail


def _failing_workflow_nodes() -> tuple[list[dict], list[dict]]:
    # The suite's fault plugin fails the input node with the code in input.fail (none: it passes).
    return [node("in", "input", simulateError="{{input.fail}}"), node("out", "output")], chain("in", "out")


def _inputs(n: int) -> list[dict]:
    return [{"i": i, "fail": "BIZ_004" if i % FAIL_EVERY == 5 else None} for i in range(n)]


def _check_results(results: list[ItemResult], inputs: list[dict]) -> None:
    assert len(results) == len(inputs)
    assert len({r.task_id for r in results}) == len(inputs)
    for index, (result, given) in enumerate(zip(results, inputs, strict=True)):
        assert result.index == index
        if given["fail"]:
            assert result.status == "failed", result
            assert not result.ok
            assert result.error and result.error["code"] == "BIZ_004", result
        else:
            assert result.status == "completed", result
            assert result.ok and result.error is None
            assert result.output["i"] == index, result  # the output node passes the input through


def _expired_token(user) -> str:
    from troupe.security import access_claims, create_access_token

    token, _ = create_access_token(access_claims(user_id=user.id, email=user.email, username=user.username,
                                                 role=user.role, companies=[], token_version=0), max_lifetime=1)
    time.sleep(2.1)  # past its exp
    return token


def test_importable_without_the_server():
    code = ("import sys, troupe.client; bad = sorted({m.split('.')[0] for m in sys.modules} & "
            "{'ray', 'sqlalchemy', 'fastapi', 'redis', 'psycopg', 'alembic'}); print(bad); assert not bad")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


async def test_every_resource_family(base_url, user):
    with Client(base_url, email=user.email, password=user.password) as troupe:
        me = troupe.me()
        assert me.id == user.id and me.email == user.email

        company = troupe.companies.create(name=f"SDK {uuid.uuid4().hex[:6]}", type="research", industry="education",
                                          settings={"maxConcurrency": 3})
        assert troupe.companies.get(company.id).name == company.name
        assert troupe.companies.update(company.id, description="from the SDK").to_dict()["description"] == \
            "from the SDK"
        others = [troupe.companies.create(name=f"SDK page {i}", type="research", industry="education").id
                  for i in range(3)]
        # Pagination: pages of 2 read lazily, every company of the caller comes back once.
        listed = [c.id for c in troupe.companies.list(page_size=2)]
        assert sorted(listed) == sorted([company.id, *others])
        assert len(list(troupe.companies.list(page_size=2, limit=3))) == 3

        agent = troupe.agents.create(name="Summariser", type="analytical", model="simulated-1",
                                     provider="simulated", company_id=company.id,
                                     configuration={"systemPrompt": "Summarise briefly.", "maxTokens": 64})
        assert [a.id for a in troupe.agents.list(company_id=company.id)] == [agent.id]
        assert "[simulated]" in str(troupe.agents.test(agent.id, "hello"))

        tool = troupe.tools.create({"schema": {"input": {"type": "object", "properties": {
            "expression": {"type": "string"}}, "required": ["expression"]}, "output": {"type": "object",
                                                                                       "properties": {}}}},
            name=f"Calc {uuid.uuid4().hex[:6]}", description="Arithmetic", type="calculator", category="utility",
            configuration={"authentication": {"type": "none"}})
        assert troupe.tools.get(tool.id).type == "calculator"
        troupe.tools.install(tool.id, company.id)
        assert any(t.id == tool.id for t in troupe.tools.list(search=tool.name))

        workflow = troupe.workflows.create(
            name="Summarise and count", company_id=company.id, configuration={"strategy": "sequential"},
            nodes=[node("in", "input"), node("sum", "agent", agentId=agent.id, prompt="Summarise: {{input.text}}"),
                   node("calc", "tool", toolId=tool.id, input={"expression": "{{input.a}} * {{input.b}}"}),
                   node("out", "output")],
            edges=chain("in", "sum", "calc", "out"))
        assert troupe.workflows.validate(workflow.id)["valid"] is True
        assert troupe.workflows.activate(workflow.id).status == "active"
        assert [w.id for w in troupe.workflows.list(company_id=company.id)] == [workflow.id]

        seen: list[dict] = []
        result = troupe.run(workflow.id, {"text": "Actors hold state.", "a": 6, "b": 7}, timeout=120,
                            on_progress=seen.append)
        assert result.status == "completed", result
        assert "42" in str(result.output)
        assert seen and all(p["taskId"] == result.task_id for p in seen)
        task = troupe.tasks.get(result.task_id)
        assert task.status == "completed" and task.workflow_id == workflow.id
        assert {e.node_id for e in troupe.tasks.executions(task.id)} == {"in", "sum", "calc", "out"}
        assert result.task_id in [t.id for t in troupe.tasks.list(workflow_id=workflow.id)]

        uploaded = troupe.files.upload(b"hello, troupe", "hello.txt", content_type="text/plain")
        assert troupe.files.get(uploaded.id).filename == "hello.txt"
        assert troupe.files.download(uploaded.id) == b"hello, troupe"
        assert uploaded.id in [f.id for f in troupe.files.list(mine=True)]
        troupe.files.delete(uploaded.id)

        with pytest.raises(TroupeError) as missing:
            troupe.companies.get(str(uuid.uuid4()))
        assert (missing.value.code, missing.value.status) == ("RES_001", 404)
        with pytest.raises(TroupeError) as bad:
            troupe.companies.create(name="", type="research", industry="education")
        assert bad.value.code.startswith("VAL_") and bad.value.field == "name" and bad.value.status == 422

        troupe.agents.delete(agent.id)
        with pytest.raises(TroupeError):
            troupe.agents.get(agent.id)


async def test_expired_token_is_refreshed_unnoticed(base_url, user):
    with Client(base_url, email=user.email, password=user.password) as troupe:
        refresh = troupe.refresh_token
        assert refresh
    expired = _expired_token(user)
    # Only an expired access token and a refresh token: the first call refreshes through /api/auth/refresh.
    with Client(base_url, token=expired, refresh_token=refresh) as troupe:
        assert troupe.me().id == user.id
        assert troupe.token != expired and troupe.refresh_token != refresh
    # Holding the password, a client whose token has expired carries on too.
    with Client(base_url, email=user.email, password=user.password) as troupe:
        troupe.aio.token = _expired_token(user)
        assert list(troupe.companies.list()) == []
        assert troupe.me().id == user.id
    # Nothing to refresh with: the caller sees the spec's error.
    with Client(base_url, token=_expired_token(user)) as troupe, pytest.raises(TroupeError) as failed:
        troupe.me()
    assert failed.value.code == "AUTH_003" and failed.value.status == 401
    with pytest.raises(TroupeError) as wrong:
        Client(base_url, email=user.email, password="Wr0ng!Passw0rd")
    assert wrong.value.code == "AUTH_006"


async def test_run_batch_of_500_in_order_with_failures(base_url, user):
    company = await make_company(user.id, maxConcurrency=50)
    workflow = await make_workflow(company, user.id, *_failing_workflow_nodes(), retryPolicy={"maxRetries": 0})
    inputs = _inputs(500)
    started = time.monotonic()
    with Client(base_url, email=user.email, password=user.password) as troupe:
        results = troupe.run_batch(workflow, inputs, timeout=600)
    _check_results(results, inputs)
    assert sum(not r.ok for r in results) == sum(1 for i in inputs if i["fail"])
    print(f"500 runs in {time.monotonic() - started:.1f} s")


async def test_async_client_run_batch_in_chunks(base_url, user, monkeypatch):
    company = await make_company(user.id, maxConcurrency=50)
    workflow = await make_workflow(company, user.id, *_failing_workflow_nodes(), retryPolicy={"maxRetries": 0})
    inputs = _inputs(200)
    async with AsyncClient(base_url, email=user.email, password=user.password) as troupe:
        heard: set[str] = set()
        real = watch.BatchFollower._on_event

        def counting(self, payload):
            if payload.get("status") in ("completed", "failed"):
                heard.add(str(payload.get("taskId")))
            return real(self, payload)

        with monkeypatch.context() as patch:
            patch.setattr(watch.BatchFollower, "_on_event", counting)
            results = await troupe.run_batch(workflow, inputs, chunk_size=64, timeout=600)
        _check_results(results, inputs)
        # The ends came over the WebSocket (polling is only the safety net).
        assert len(heard & {r.task_id for r in results}) >= len(inputs) // 2, len(heard)
        # The same client keeps working after its token expired mid-session.
        troupe.token = await asyncio.to_thread(_expired_token, user)
        one = await troupe.run(workflow, {"i": 0, "fail": None}, timeout=120)
        assert one.status == "completed" and one.output["i"] == 0
        assert [c.id async for c in troupe.companies.list()] == [company]
        failed = await troupe.run(workflow, {"i": 1, "fail": "BIZ_004"}, timeout=120)
        assert failed.status == "failed" and failed.error["code"] == "BIZ_004"


async def test_run_batch_falls_back_to_polling(base_url, user, monkeypatch):
    async def no_socket(self) -> None:  # as if /api/ws could not be reached
        return None

    monkeypatch.setattr(watch.BatchFollower, "_follow_socket", no_socket)
    company = await make_company(user.id, maxConcurrency=50)
    workflow = await make_workflow(company, user.id, *_failing_workflow_nodes(), retryPolicy={"maxRetries": 0})
    inputs = _inputs(60)
    with Client(base_url, email=user.email, password=user.password) as troupe:
        _check_results(troupe.run_batch(workflow, inputs, timeout=300), inputs)


async def test_batch_execute_is_all_or_nothing(base_url, user):
    company = await make_company(user.id)
    good = await make_workflow(company, user.id, *_failing_workflow_nodes())
    draft = await make_workflow(company, user.id, *_failing_workflow_nodes(), status="draft")
    async with AsyncClient(base_url, email=user.email, password=user.password) as troupe:
        items = [{"name": f"t{i}", "type": "workflow", "companyId": company, "workflowId": wf, "input": {"i": i}}
                 for i, wf in enumerate([good, draft, good])]
        with pytest.raises(TroupeError) as refused:
            await troupe.tasks.batch(items, execute=True)
        error = refused.value
        assert (error.code, error.status, error.field) == ("VAL_001", 422, "tasks[1].workflowId")
        assert [(e["index"], e["code"]) for e in error.details["errors"]] == [(1, "BIZ_001")]
        assert await troupe.tasks.all(company_id=company) == []  # nothing was written
        # Without the draft, every task is created and started, in input order.
        ok_items = [items[0], items[2]]
        tasks = await troupe.tasks.batch(ok_items, execute=True)
        assert [t.input for t in tasks] == [{"i": 0}, {"i": 2}]
        assert all(t.to_dict()["queuedAt"] for t in tasks)
        for task in tasks:
            deadline = time.monotonic() + 120
            while (row := await troupe.tasks.get(task.id)).status not in ("completed", "failed"):
                assert time.monotonic() < deadline, row
                await asyncio.sleep(0.2)
            assert row.status == "completed"


def _readme_snippet() -> str:
    text = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = text.split("## Batch from Python", 1)[1]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


async def test_readme_batch_snippet_runs_as_written(base_url, client):
    """The README's ten lines, against this stack, for a freshly registered account."""
    snippet = await asyncio.to_thread(_readme_snippet)
    assert len(snippet.strip().splitlines()) <= 10
    email = f"ada-{uuid.uuid4().hex[:8]}@example.com"
    registered = await client.post("/api/auth/register", json={
        "email": email, "username": f"ada{uuid.uuid4().hex[:8]}", "password": "Str0ng!Passw0rd",
        "firstName": "Ada", "lastName": "Lovelace"})
    assert registered.status_code == 201, registered.text
    code = snippet.replace("http://127.0.0.1:8000", base_url).replace("ada@example.com", email)
    done = await asyncio.to_thread(subprocess.run, [sys.executable, "-c", code], capture_output=True, text=True,
                                   timeout=600)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert [line.split()[0] for line in lines] == ["0", "1", "2", "3", "4"]
    assert all(line.split()[2] == "completed" and f"{{'n': {i}}}" in line for i, line in enumerate(lines))
