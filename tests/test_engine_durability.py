"""Runs that never strand (issue 9, part 4): a Postgres outage with runs in flight,
a node configuration that breaks the driver's assumptions, and two drivers racing
for one run (only the lease holder's records land)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update

from tests.utils.engine import (
    chain,
    completed_once,
    executions,
    make_company,
    make_workflow,
    node,
    run_workflow,
    wait_status,
)
from tests.utils.fixtures import assert_ok


def test_postgres_stopped_with_runs_in_flight_every_run_completes_each_node_once(outage_scenario_report):
    report = outage_scenario_report["engine"]
    assert report["outageSeconds"] >= 9, report
    assert len(report["runs"]) == 4
    for entry in report["runs"]:
        assert entry["status"] == "completed", report
        # Every node completed exactly once: nothing lost in the outage, nothing run twice after it.
        assert entry["completedRows"] == {n: 1 for n in entry["nodes"]}, entry


async def test_template_rendering_a_non_numeric_timeout_fails_the_run_clearly(client, user):
    company = await make_company(user.id)
    wf = await make_workflow(company, user.id, [node("in", "input"), node("wait", "output", timeout="{{input.t}}"),
                                                node("out", "output", value="never")],
                             chain("in", "wait", "out"), strategy="sequential")
    task_id = await run_workflow(client, user, company, wf, {"t": "soon"})
    task = await wait_status(client, user, task_id, timeout=30)
    assert task["status"] == "failed", task
    assert task["error"]["code"] == "SYS_001" and task["error"]["nodeId"] == "wait", task["error"]
    assert "timeout" in task["error"]["message"] and "'soon'" in task["error"]["message"], task["error"]
    rows = await executions(client, user, task_id)
    failed = [r for r in rows if r["nodeId"] == "wait"]
    assert len(failed) == 1 and failed[0]["status"] == "failed" and "timeout" in failed[0]["error"], failed
    assert not any(r["nodeId"] == "out" for r in rows)


async def test_two_drivers_racing_only_the_lease_holders_records_land(client, user):
    from troupe.actors import handles
    from troupe.db import models
    from troupe.db.session import session_scope
    from troupe.engine import records
    from troupe.engine.driver import RunControl, RunDriver

    company = await make_company(user.id)
    # Resident before the run exists: its activation (which takes over running runs) is over, and
    # afterwards it adopts only runs whose lease expired; this run's never does.
    await handles.call(handles.company_name(company), "ping")
    steps = [f"s{i}" for i in range(5)]
    wf = await make_workflow(company, user.id, [node("in", "input"), *(node(s, "input", sleep=0.4) for s in steps),
                                                node("out", "output", value="raced")],
                             chain("in", *steps, "out"), strategy="sequential")
    task = assert_ok(await client.post("/api/tasks", headers=user.headers, json={
        "name": "race", "type": "workflow", "priority": "medium", "companyId": company, "workflowId": wf,
        "input": {}}), 201)
    task_id = uuid.UUID(task["id"])
    async with session_scope() as session:  # admitted by "someone": running under lease epoch 1
        await session.execute(update(models.Task).where(models.Task.id == task_id).values(
            status="running", started_at=datetime.now(UTC), lease_epoch=1,
            lease_expires_at=datetime.now(UTC) + timedelta(seconds=60)))

    first = asyncio.ensure_future(RunDriver(task_id, RunControl(), 1).run())
    for _ in range(100):  # the first driver is mid-run: some nodes completed, one in flight
        if len([r for r in await executions(client, user, task["id"]) if r["status"] == "completed"]) >= 2:
            break
        await asyncio.sleep(0.1)
    claimed = await records.claim_runs(uuid.UUID(company), [task_id], takeover=True)
    assert claimed == {task_id: 2}
    taken_over = datetime.now(UTC)
    second = asyncio.ensure_future(RunDriver(task_id, RunControl(), 2).run())
    assert await asyncio.wait_for(first, 30) == "fenced"
    assert await asyncio.wait_for(second, 30) == "completed"

    final = assert_ok(await client.get(f"/api/tasks/{task['id']}", headers=user.headers))
    assert final["status"] == "completed" and final["output"] == "raced"
    rows = await executions(client, user, task["id"])
    assert set(completed_once(rows)) == {(n, 0) for n in ("in", *steps, "out")}
    async with session_scope() as session:
        found = (await session.execute(select(models.TaskExecution).where(
            models.TaskExecution.task_id == task_id))).scalars().all()
    stale = [r for r in found if (r.meta or {}).get("epoch") == 1]
    assert stale, "the first driver recorded its early nodes"
    # Nothing the fenced driver did after the takeover landed: no attempt started, no completion.
    assert all(r.started_at <= taken_over for r in stale), [(r.node_id, r.started_at) for r in stale]
    assert all(r.status != "completed" or r.completed_at <= taken_over for r in stale)
    assert {r.node_id for r in found if r.status == "completed" and (r.meta or {}).get("epoch") == 2}
