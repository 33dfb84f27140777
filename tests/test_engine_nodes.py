"""Every node type, edges, strategies and error handling, through the tasks API on real Ray."""

from __future__ import annotations

import asyncio

from tests.utils.engine import (
    chain,
    completed_once,
    edge,
    executions,
    make_agent,
    make_company,
    make_tool,
    make_workflow,
    node,
    run_workflow,
    wait_status,
)
from tests.utils.fixtures import assert_error, assert_ok


async def test_agent_tool_output_chain_with_templates_and_accounting(client, user):
    company = await make_company(user.id)
    agent = await make_agent(company, user.id)
    tool = await make_tool(user.id)
    wf = await make_workflow(company, user.id, [
        node("in", "input"),
        node("calc", "tool", toolId=tool, input={"expression": "{{input.a}} * {{vars.factor}} + 1"}),
        node("ask", "agent", agentId=agent, prompt="Result is {{nodes.calc.output.result}}"),
        node("out", "output", value={"calc": "{{nodes.calc.output.result}}", "text": "{{nodes.ask.output.text}}"}),
    ], chain("in", "calc", "ask", "out"), strategy="sequential", overridableVariables=["factor"])
    task_id = await run_workflow(client, user, company, wf, {"a": 6}, variables={"factor": 7})
    task = await wait_status(client, user, task_id)
    assert task["status"] == "completed", task
    assert task["output"]["calc"] == 43
    assert task["output"]["text"].startswith("[simulated]") and "Result is 43" in task["output"]["text"]
    assert task["progress"] == 100 and task["totalSteps"] == 4
    assert task["metadata"]["resourceUsage"]["tokens"] > 0 and task["metadata"]["cost"] == 0
    assert task["metadata"]["performance"]["totalTime"] >= task["metadata"]["performance"]["executionTime"] >= 0
    rows = await executions(client, user, task_id)
    assert set(completed_once(rows)) == {("in", 0), ("calc", 0), ("ask", 0), ("out", 0)}
    ask = next(r for r in rows if r["nodeId"] == "ask")
    assert ask["metadata"]["tokensUsed"] > 0 and ask["metadata"]["model"] == "sim-1"
    assert ask["metadata"]["cacheHit"] is False
    logs = assert_ok(await client.get(f"/api/tasks/{task_id}/logs?nodeId=calc", headers=user.headers))
    assert logs and all(entry["details"]["nodeId"] == "calc" for entry in logs)
    # The spec's LogEntry, as /api/logs answers it: `timestamp`, and userId/requestId (null when unknown).
    assert all(entry["timestamp"].endswith("Z") and "createdAt" not in entry for entry in logs)
    assert all({"userId", "requestId", "taskId", "companyId"} <= set(entry) for entry in logs)
    assert all(entry["taskId"] == task_id for entry in logs)
    from sqlalchemy import func, select

    from troupe.db import models
    from troupe.db.session import session_scope

    async with session_scope() as session:
        calls = await session.scalar(select(func.count()).select_from(models.ToolCall)
                                     .where(models.ToolCall.task_id == task_id))
    assert calls == 1
    # The agent's counters are added by the pool's flusher, off the call's path: they land shortly after.
    for _ in range(50):
        async with session_scope() as session:
            agent_row = await session.get(models.Agent, __import__("uuid").UUID(agent))
        if (agent_row.performance or {}).get("totalRequests"):
            break
        await asyncio.sleep(0.1)
    assert agent_row.performance["totalRequests"] >= 1 and agent_row.performance["totalTokensUsed"] > 0


async def test_condition_branches_and_missing_field_is_false(client, user):
    company = await make_company(user.id)
    nodes = [node("in", "input"),
             node("check", "condition", conditions=[{"field": "input.score", "operator": "greater_than", "value": 5},
                                                    {"field": "input.tag", "operator": "equals", "value": "x",
                                                     "logic": "or"}]),
             node("yes", "output", value="high"), node("no", "output", value="low")]
    edges = [edge("in", "check"), edge("check", "yes", "conditional", "true"),
             edge("check", "no", "conditional", "false")]
    wf = await make_workflow(company, user.id, nodes, edges, strategy="conditional")
    high = await wait_status(client, user, await run_workflow(client, user, company, wf, {"score": 9}))
    low = await wait_status(client, user, await run_workflow(client, user, company, wf, {"score": 1}))
    tagged = await wait_status(client, user, await run_workflow(client, user, company, wf, {"score": 1, "tag": "x"}))
    missing = await wait_status(client, user, await run_workflow(client, user, company, wf, {}))
    assert (high["output"], low["output"], tagged["output"], missing["output"]) == ("high", "low", "high", "low")
    rows = await executions(client, user, missing["id"])
    assert {r["nodeId"] for r in rows} == {"in", "check", "no"}  # the untaken branch never ran


async def test_loop_over_items_and_while_with_bound(client, user):
    company = await make_company(user.id)
    tool = await make_tool(user.id)
    wf = await make_workflow(company, user.id, [
        node("in", "input"),
        node("each", "loop", items="{{input.values}}", maxIterations=10),
        node("square", "tool", toolId=tool, input={"expression": "{{loop.item}} ** 2"}),
        node("out", "output", value="{{nodes.each.output.results}}"),
    ], [edge("in", "each"), edge("each", "square"), edge("square", "each"), edge("each", "out")])
    task = await wait_status(client, user, await run_workflow(client, user, company, wf, {"values": [1, 2, 3]}))
    assert task["status"] == "completed", task
    assert [r["result"] for r in task["output"]] == [1, 4, 9]
    counts = completed_once(await executions(client, user, task["id"]))
    assert {k for k in counts if k[0] == "square"} == {("square", 0), ("square", 1), ("square", 2)}
    bounded = await make_workflow(company, user.id, [
        node("in", "input"),
        node("spin", "loop", maxIterations=3, **{"while": [{"field": "input.go", "operator": "equals",
                                                            "value": True}]}),
        node("step", "output", value="{{loop.index}}"),
    ], [edge("in", "spin"), edge("spin", "step"), edge("step", "spin")])
    spun = await wait_status(client, user, await run_workflow(client, user, company, bounded, {"go": True}))
    assert spun["status"] == "completed" and spun["output"]["iterations"] == 3
    assert spun["output"]["boundReached"] is True


async def test_parallel_fan_out_and_short_delay(client, user):
    company = await make_company(user.id)
    nodes = [node("in", "input")] + [node(f"d{i}", "delay", seconds=0.6) for i in range(3)] + [node("out", "output")]
    edges = [edge("in", f"d{i}") for i in range(3)] + [edge(f"d{i}", "out") for i in range(3)]
    wf = await make_workflow(company, user.id, nodes, edges, strategy="parallel")
    task = await wait_status(client, user, await run_workflow(client, user, company, wf, {}))
    assert task["status"] == "completed"
    rows = [r for r in await executions(client, user, task["id"]) if r["nodeId"].startswith("d")]
    starts = sorted(r["startedAt"] for r in rows)
    ends = sorted(r["completedAt"] for r in rows)
    assert starts[-1] < ends[0], "the three delays overlapped"


async def test_retry_with_backoff_then_success(client, user):
    company = await make_company(user.id)
    wf = await make_workflow(company, user.id, [node("in", "input"), node("flaky", "output", value="ok",
                                                                          simulateFailAttempts=2)],
                             chain("in", "flaky"), errorHandling="retry",
                             retryPolicy={"maxRetries": 3, "backoffStrategy": "exponential", "initialDelay": 0.2,
                                          "retryableErrors": ["SYS_003"]})
    task = await wait_status(client, user, await run_workflow(client, user, company, wf, {}))
    assert task["status"] == "completed" and task["output"] == "ok"
    rows = [r for r in await executions(client, user, task["id"]) if r["nodeId"] == "flaky"]
    assert [r["status"] for r in rows] == ["failed", "failed", "completed"]
    assert [r["retryCount"] for r in rows] == [0, 1, 2]
    from datetime import datetime

    gaps = [(datetime.fromisoformat(b["startedAt"]) - datetime.fromisoformat(a["completedAt"])).total_seconds()
            for a, b in zip(rows, rows[1:], strict=False)]
    assert gaps[0] >= 0.18 and gaps[1] >= 0.38  # 0.2 s then 0.4 s


async def test_non_retryable_code_stops_and_error_edge_fallback(client, user):
    company = await make_company(user.id)
    wf = await make_workflow(company, user.id, [node("in", "input"), node("bad", "output", simulateError="BIZ_003"),
                                                node("after", "output", value="never")],
                             chain("in", "bad", "after"), retryPolicy={"maxRetries": 2, "retryableErrors": ["SYS_003"]})
    failed = await wait_status(client, user, await run_workflow(client, user, company, wf, {}))
    assert failed["status"] == "failed" and failed["error"]["code"] == "BIZ_003"
    assert failed["error"]["nodeId"] == "bad" and failed["error"]["recoverable"] is True
    assert len([r for r in await executions(client, user, failed["id"]) if r["nodeId"] == "bad"]) == 1
    fallback = await make_workflow(company, user.id, [
        node("in", "input"), node("bad", "output", simulateError="SYS_003"), node("good", "output", value="main"),
        node("rescue", "output", value="fallback")],
        [edge("in", "bad"), edge("bad", "good", "success"), edge("bad", "rescue", "error")], errorHandling="fallback")
    rescued = await wait_status(client, user, await run_workflow(client, user, company, fallback, {}))
    assert rescued["status"] == "completed" and rescued["output"] == "fallback"
    cont = await make_workflow(company, user.id, [
        node("in", "input"), node("bad", "output", simulateError="SYS_003"), node("next", "output", value="went on")],
        chain("in", "bad", "next"), errorHandling="continue")
    went_on = await wait_status(client, user, await run_workflow(client, user, company, cont, {}))
    assert went_on["status"] == "completed" and went_on["output"] == "went on"


async def test_node_timeout_and_workflow_timeout(client, user):
    company = await make_company(user.id)
    slow = await make_workflow(company, user.id, [node("in", "input"), node("slow", "delay", seconds=1.5, timeout=0.5),
                                                  node("out", "output")], chain("in", "slow", "out"))
    task = await wait_status(client, user, await run_workflow(client, user, company, slow, {}))
    assert task["status"] == "failed" and task["error"]["code"] == "SYS_006"
    whole = await make_workflow(company, user.id, [node("in", "input"), node("a", "delay", seconds=1),
                                                   node("b", "delay", seconds=1), node("out", "output")],
                                chain("in", "a", "b", "out"), timeout=1.5)
    task = await wait_status(client, user, await run_workflow(client, user, company, whole, {}))
    assert task["status"] == "failed" and task["error"]["code"] == "SYS_006"


async def test_long_delay_parks_the_run_and_wakes(client, user):
    from datetime import datetime

    company = await make_company(user.id, maxConcurrency=1)
    wf = await make_workflow(company, user.id, [node("in", "input"), node("wait", "delay", seconds=6),
                                                node("out", "output", value="woke")], chain("in", "wait", "out"))
    parked = await run_workflow(client, user, company, wf, {})
    quick = await make_workflow(company, user.id, [node("in", "input"), node("out", "output", value="quick")],
                                chain("in", "out"))
    await asyncio.sleep(1.0)
    # The parked run holds no slot: a second task of this maxConcurrency=1 company runs while it sleeps.
    other = await wait_status(client, user, await run_workflow(client, user, company, quick, {}), timeout=30)
    assert other["status"] == "completed"
    done = await wait_status(client, user, parked, timeout=60)
    assert done["status"] == "completed" and done["output"] == "woke"
    wait_row = next(r for r in await executions(client, user, parked) if r["nodeId"] == "wait")
    wake_at = datetime.fromisoformat(wait_row["metadata"]["wakeAt"]).replace(tzinfo=None)
    finished = datetime.fromisoformat(other["completedAt"].replace("Z", "+00:00")).replace(tzinfo=None)
    assert finished < wake_at, (other["completedAt"], wake_at)


async def test_bad_input_refused(client, user):
    company = await make_company(user.id)
    draft = await make_workflow(company, user.id, [node("in", "input"), node("out", "output")], chain("in", "out"),
                                status="draft")
    task = assert_ok(await client.post("/api/tasks", headers=user.headers, json={
        "name": "d", "type": "workflow", "priority": "low", "companyId": company, "workflowId": draft}), 201)
    err = assert_error(await client.post(f"/api/tasks/{task['id']}/execute", headers=user.headers, json={}),
                       422, "BIZ_001")
    assert err["details"]["problems"]
    unbounded = await make_workflow(company, user.id, [node("in", "input"), node("l", "loop", items=[1]),
                                                       node("x", "output")],
                                    [edge("in", "l"), edge("l", "x"), edge("x", "l")])
    err = assert_error(await client.post(f"/api/workflows/{unbounded}/execute", headers=user.headers, json={}),
                       422, "BIZ_001")
    assert any("maxIterations" in p["message"] for p in err["details"]["problems"])
    assert_error(await client.post("/api/tasks", headers=user.headers, json={
        "name": "x", "type": "workflow", "priority": "low", "companyId": company}), 422, "VAL_002", "workflowId")
    assert_error(await client.post("/api/tasks", headers=user.headers, json={
        "name": "x", "type": "scheduled", "priority": "low", "companyId": company, "workflowId": draft}),
        422, "VAL_002", "scheduledAt")
    assert_error(await client.post("/api/tasks", headers=user.headers, json={
        "name": "x", "type": "workflow", "priority": "low", "companyId": company, "workflowId": draft,
        "ownerId": user.id}), 422, "VAL_001")
