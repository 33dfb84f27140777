"""Tasks API control and admission limits on real Ray: cancel, pause/resume, retry,
company stop, maxConcurrency, agent concurrency, priorities, queue, batch."""

from __future__ import annotations

import asyncio
from datetime import datetime

from tests.utils.engine import (
    chain,
    completed_once,
    executions,
    make_agent,
    make_company,
    make_workflow,
    node,
    run_workflow,
    wait_status,
)
from tests.utils.fixtures import assert_error, assert_ok


def _slow_chain(n: int, seconds: float) -> tuple[list[dict], list[dict]]:
    ids = ["in"] + [f"s{i}" for i in range(n)] + ["out"]
    nodes = [node("in", "input")] + [node(f"s{i}", "delay", seconds=seconds) for i in range(n)] + [
        node("out", "output", value="done")]
    return nodes, chain(*ids)


async def test_cancel_mid_run_and_retry_rules(client, user, other_user):
    company = await make_company(user.id)
    wf = await make_workflow(company, user.id, *_slow_chain(4, 0.8), strategy="sequential")
    task_id = await run_workflow(client, user, company, wf, {})
    await wait_status(client, user, task_id, ("running",))
    await asyncio.sleep(1.0)
    assert_error(await client.post(f"/api/tasks/{task_id}/retry", headers=user.headers, json={}), 409, "RES_003")
    assert_error(await client.delete(f"/api/tasks/{task_id}", headers=user.headers), 409, "RES_003")
    assert_error(await client.post(f"/api/tasks/{task_id}/cancel", headers=other_user.headers, json={}),
                 404, "RES_001")
    cancelled = assert_ok(await client.post(f"/api/tasks/{task_id}/cancel", headers=user.headers,
                                            json={"reason": "changed my mind"}))
    assert cancelled["status"] == "cancelled" and cancelled["error"]["message"] == "changed my mind"
    await asyncio.sleep(1.5)
    task = assert_ok(await client.get(f"/api/tasks/{task_id}", headers=user.headers))
    assert task["status"] == "cancelled"
    rows = await executions(client, user, task_id)
    assert not any(r["nodeId"] == "out" for r in rows)  # nothing ran after the cancel
    assert_error(await client.post(f"/api/tasks/{task_id}/cancel", headers=user.headers, json={}), 409, "RES_003")
    assert_ok(await client.delete(f"/api/tasks/{task_id}", headers=user.headers))
    assert_error(await client.get(f"/api/tasks/{task_id}", headers=user.headers), 404, "RES_001")


async def test_pause_resume_mid_run_and_retry_from_step_reuses_outputs(client, user):
    company = await make_company(user.id)
    wf = await make_workflow(company, user.id, *_slow_chain(3, 0.7), strategy="sequential")
    task_id = await run_workflow(client, user, company, wf, {})
    await wait_status(client, user, task_id, ("running",))
    await asyncio.sleep(0.5)
    assert_ok(await client.post(f"/api/tasks/{task_id}/pause", headers=user.headers))
    paused = await wait_status(client, user, task_id, ("paused",), timeout=10)
    done_before = {r["nodeId"] for r in await executions(client, user, task_id) if r["status"] == "completed"}
    await asyncio.sleep(1.0)
    assert {r["nodeId"] for r in await executions(client, user, task_id)
            if r["status"] == "completed"} == done_before  # nothing ran while paused
    assert paused["progress"] < 100
    assert_ok(await client.put(f"/api/tasks/{task_id}", headers=user.headers, json={"priority": "high"}))
    assert_ok(await client.post(f"/api/tasks/{task_id}/resume", headers=user.headers))
    task = await wait_status(client, user, task_id)
    assert task["status"] == "completed"
    completed_once(await executions(client, user, task_id))
    assert_error(await client.put(f"/api/tasks/{task_id}", headers=user.headers, json={"name": "x"}), 409, "RES_003")
    first = {r["nodeId"]: r["id"] for r in await executions(client, user, task_id) if r["status"] == "completed"}
    assert_ok(await client.post(f"/api/tasks/{task_id}/retry", headers=user.headers, json={"fromStep": "s2"}), 202)
    again = await wait_status(client, user, task_id)
    assert again["status"] == "completed"
    rows = await executions(client, user, task_id)
    now_completed = {r["nodeId"]: r["id"] for r in rows if r["status"] == "completed"}
    for reused in ("in", "s0", "s1"):
        assert now_completed[reused] == first[reused]
    for rerun in ("s2", "out"):
        assert now_completed[rerun] != first[rerun]
    completed_once(rows)
    assert_error(await client.post(f"/api/tasks/{task_id}/retry", headers=user.headers, json={"fromStep": "nope"}),
                 422, "VAL_001", "fromStep")


async def test_stopped_company_refuses_and_start_restores(client, user, admin, other_user, viewer):
    company = await make_company(user.id)
    wf = await make_workflow(company, user.id, *_slow_chain(1, 0.1))
    # the owner controls their company (ownership grants companies:execute); others can't see it
    assert_error(await client.post(f"/api/companies/{company}/stop", headers=other_user.headers), 404, "RES_001")
    assert_error(await client.post(f"/api/companies/{company}/stop", headers=viewer.headers), 403, "AUTH_004")
    stopped = assert_ok(await client.post(f"/api/companies/{company}/stop", headers=user.headers))
    assert stopped["executionStopped"] is True
    task = assert_ok(await client.post("/api/tasks", headers=user.headers, json={
        "name": "t", "type": "workflow", "priority": "low", "companyId": company, "workflowId": wf}), 201)
    assert_error(await client.post(f"/api/tasks/{task['id']}/execute", headers=user.headers, json={}), 409, "BIZ_002")
    assert_ok(await client.post(f"/api/companies/{company}/start", headers=admin.headers))
    assert_ok(await client.post(f"/api/tasks/{task['id']}/execute", headers=user.headers, json={}), 202)
    assert (await wait_status(client, user, task["id"]))["status"] == "completed"


async def test_max_concurrency_holds_for_50_tasks(client, user):
    company = await make_company(user.id, maxConcurrency=3)
    wf = await make_workflow(company, user.id, [node("in", "input"), node("work", "delay", seconds=0.3),
                                                node("out", "output")], chain("in", "work", "out"))
    batch = assert_ok(await client.post("/api/tasks/batch", headers=user.headers, json={"tasks": [
        {"name": f"t{i}", "type": "workflow", "companyId": company, "workflowId": wf, "input": {"i": i}}
        for i in range(50)]}), 201)
    assert batch["created"] == 50
    ids = [t["id"] for t in batch["tasks"]]
    await asyncio.gather(*[client.post(f"/api/tasks/{t}/execute", headers=user.headers, json={}) for t in ids])
    queue = assert_ok(await client.get(f"/api/tasks/queue?companyId={company}", headers=user.headers))
    assert queue["totalCapacity"] == 3 and queue["usedCapacity"] <= 3
    tasks = [await wait_status(client, user, t, timeout=120) for t in ids]
    assert all(t["status"] == "completed" for t in tasks)
    events = []
    for t in tasks:
        events += [(datetime.fromisoformat(t["startedAt"]), 1), (datetime.fromisoformat(t["completedAt"]), -1)]
    running = peak = 0
    for _, delta in sorted(events, key=lambda e: (e[0], e[1])):
        running += delta
        peak = max(peak, running)
    assert peak <= 3, peak
    assert peak == 3  # the limit was actually used
    queue = assert_ok(await client.get(f"/api/tasks/queue?companyId={company}", headers=user.headers))
    assert queue["completed"] == 50 and queue["pending"] == 0 and queue["running"] == 0


async def test_agent_limit_of_one_serialises_calls(client, user):
    company = await make_company(user.id, maxConcurrency=5)
    agent = await make_agent(company, user.id, maxConcurrency=1)
    wf = await make_workflow(company, user.id, [node("in", "input"), node("ask", "agent", agentId=agent,
                                                                          simulatedLatencyMs=400),
                                                node("out", "output")], chain("in", "ask", "out"))
    ids = await asyncio.gather(*[run_workflow(client, user, company, wf, {"q": i}) for i in range(3)])
    for t in ids:
        assert (await wait_status(client, user, t))["status"] == "completed"
    calls = []
    for t in ids:
        row = next(r for r in await executions(client, user, t) if r["nodeId"] == "ask" and r["status"] == "completed")
        calls.append(row["output"])
    assert all(c["simulated"] for c in calls)
    # Three 0.4 s calls through one slot take at least 1.2 s from the first start to the last end.
    spans = [r for t in ids for r in await executions(client, user, t) if r["nodeId"] == "ask"]
    first = min(datetime.fromisoformat(r["startedAt"]) for r in spans)
    last = max(datetime.fromisoformat(r["completedAt"]) for r in spans)
    assert (last - first).total_seconds() >= 1.2


async def test_priorities_are_honoured(client, user):
    company = await make_company(user.id, maxConcurrency=1)
    wf = await make_workflow(company, user.id, [node("in", "input"), node("work", "delay", seconds=0.4),
                                                node("out", "output")], chain("in", "work", "out"))
    blocker = await run_workflow(client, user, company, wf, {})
    await wait_status(client, user, blocker, ("running",))
    low = await run_workflow(client, user, company, wf, {}, priority="low")
    medium = await run_workflow(client, user, company, wf, {}, priority="medium")
    urgent = await run_workflow(client, user, company, wf, {}, priority="urgent")
    order = [await wait_status(client, user, t) for t in (urgent, medium, low)]
    starts = [datetime.fromisoformat(t["startedAt"]) for t in order]
    assert starts == sorted(starts), starts


async def test_batch_is_all_or_nothing_with_indexes(client, user, other_user):
    company = await make_company(user.id)
    foreign = await make_company(other_user.id)
    wf = await make_workflow(company, user.id, *_slow_chain(1, 0.1))
    err = assert_error(await client.post("/api/tasks/batch", headers=user.headers, json={"tasks": [
        {"name": "ok", "type": "workflow", "companyId": company, "workflowId": wf},
        {"name": "bad", "type": "workflow", "companyId": foreign, "workflowId": wf},
        {"name": "bad2", "type": "single_agent", "companyId": company}]}), 422, "VAL_001")
    assert [e["index"] for e in err["details"]["errors"]] == [1, 2]
    listed = assert_ok(await client.get(f"/api/tasks?companyId={company}", headers=user.headers))
    assert listed == []
    assert assert_ok(await client.get(f"/api/tasks?companyId={company}", headers=other_user.headers)) == []
