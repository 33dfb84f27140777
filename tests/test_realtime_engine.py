"""Real time end to end: a WebSocket client in a task's room receives the run's
task:progress events from the engine, in order, up to completion."""

from __future__ import annotations

import time

from tests.test_realtime import connected
from tests.utils.engine import chain, make_company, make_workflow, node
from tests.utils.fixtures import assert_ok


async def test_task_progress_reaches_a_subscriber_in_order(client, base_url, user):
    company_id = await make_company(user.id)
    workflow_id = await make_workflow(company_id, user.id, [
        node("input", "input"),
        node("think", "agent", provider="simulated", model="simulated-1", prompt="Plan {{input.goal}}"),
        node("wait", "delay", seconds=0.2),
        node("output", "output", value="{{nodes.think.output.text}}")],
        chain("input", "think", "wait", "output"), strategy="sequential")
    task = assert_ok(await client.post("/api/tasks", headers=user.headers, json={
        "name": "live", "type": "workflow", "companyId": company_id, "workflowId": workflow_id,
        "input": {"goal": "launch"}}), 201)
    sess, ws = await connected(base_url, user.token)
    try:
        joined = await ws.request("join_room", {"room": f"task:{task['id']}"})
        assert joined["type"] == "join_room", joined
        assert_ok(await client.post(f"/api/tasks/{task['id']}/execute", headers=user.headers, json={}), 202)
        events = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            msg = await ws.recv(max(0.1, deadline - time.monotonic()))
            if msg["type"] != "task:progress":
                continue
            assert msg["payload"]["taskId"] == task["id"]
            events.append(msg["payload"])
            if msg["payload"]["status"] in ("completed", "failed", "cancelled"):
                break
    finally:
        await sess.__aexit__(None, None, None)
    progress = [e["progress"] for e in events]
    assert events and events[-1]["status"] == "completed", events
    assert progress == sorted(progress) and progress[-1] == 100, progress
    # Each finished node is announced with its step, in the order the sequential run executed them.
    names = ["input", "think", "wait", "output"]
    steps = [e["currentStep"] for e in events if e["status"] == "running" and e.get("currentStep") in names]
    assert list(dict.fromkeys(steps)) == names, steps
