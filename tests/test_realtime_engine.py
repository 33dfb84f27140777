"""Real time end to end: a WebSocket client in a task's room receives the run's
task:progress events from the engine, in order, up to completion."""

from __future__ import annotations

import time

from tests.test_realtime import connected
from tests.utils.engine import chain, make_agent, make_company, make_workflow, node
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


async def test_server_messages_come_from_real_state_changes(client, base_url, user, super_admin):
    """company:status from starting the company, agent:activity from calling the agent,
    notification from a finished run, system:alert from switching maintenance on and off:
    each produced by the change itself, through the HTTP API."""
    from tests.test_settings_effect import settings

    company_id = await make_company(user.id)
    agent_id = await make_agent(company_id, user.id)
    workflow_id = await make_workflow(company_id, user.id, [node("input", "input"), node("output", "output")],
                                      chain("input", "output"), strategy="sequential")
    sess, ws = await connected(base_url, user.token)
    try:
        assert (await ws.request("join_room", {"room": f"company:{company_id}"}))["type"] == "join_room"

        assert_ok(await client.post(f"/api/companies/{company_id}/start", headers=user.headers, json={}))
        status = await ws.expect("company:status")
        assert status["payload"]["companyId"] == company_id and status["payload"]["status"] == "active"
        assert status["companyId"] == company_id

        assert_ok(await client.post(f"/api/agents/{agent_id}/test", headers=user.headers,
                                    json={"input": "hello"}))
        activity = await ws.expect("agent:activity", wait=60)
        assert activity["payload"]["agentId"] == agent_id

        task = assert_ok(await client.post("/api/tasks", headers=user.headers, json={
            "name": "notify me", "type": "workflow", "companyId": company_id, "workflowId": workflow_id,
            "input": {}}), 201)
        assert_ok(await client.post(f"/api/tasks/{task['id']}/execute", headers=user.headers, json={}), 202)
        note = await ws.expect("notification", wait=60)
        assert note["payload"]["category"] == "task" and note["userId"] == user.id

        async with settings(client, super_admin, maintenance={"enabled": True, "message": "Back soon"}):
            alert = await ws.expect("system:alert")
            assert alert["payload"]["title"] == "Maintenance mode on"
            assert alert["payload"]["description"] == "Back soon"
            assert alert["payload"]["source"] == "settings"
        assert (await ws.expect("system:alert"))["payload"]["title"] == "Maintenance mode off"
    finally:
        await sess.__aexit__(None, None, None)


async def test_a_repeated_alert_is_raised_once_per_window(stack):
    """What the health check relies on when it is polled every few seconds during an outage."""
    import uuid

    from troupe.events.alerts import raise_alert

    key = f"down:test-{uuid.uuid4().hex[:8]}"
    first = await raise_alert(severity="critical", title="x is down", description="d", source="health",
                              affected=["x"], actions=[], once_per=(key, 60))
    again = await raise_alert(severity="critical", title="x is down", description="d", source="health",
                              affected=["x"], actions=[], once_per=(key, 60))
    assert first is not None and first["type"] == "system:alert" and first["streamId"]
    assert again is None
