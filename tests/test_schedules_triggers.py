"""Schedules that fire (once per slot, even with two schedulers), webhook and event
triggers, scheduled batch tasks, the company retryPolicy fallback, and what a
run's resourceUsage holds. Real Postgres, Redis, Ray and HTTP; no test sleeps for minutes."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import UTC, datetime, timedelta

import ray
from sqlalchemy import func, select

from tests.utils.engine import chain, make_company, make_workflow, node, run_workflow, wait_status
from tests.utils.fixtures import assert_error, assert_ok
from troupe.db import models
from troupe.db.session import session_scope
from troupe.engine import triggers
from troupe.platform.workflows.triggers import sign
from troupe.timeutil import utcnow

SECRET = "hook-secret-0123456789"


def _graph() -> tuple[list[dict], list[dict]]:
    return [node("in", "input"), node("out", "output")], chain("in", "out")


def _parse(value: str) -> datetime:
    return datetime.fromisoformat(value)


async def _runs(workflow_id: str, source: str | None = None) -> list[models.Task]:
    async with session_scope() as session:
        query = select(models.Task).where(models.Task.workflow_id == uuid.UUID(workflow_id))
        if source:
            query = query.where(models.Task.meta["source"].astext == source)
        return list((await session.execute(query.order_by(models.Task.created_at))).scalars())


async def _api_workflow(client, user, company: str, **extra) -> dict:
    nodes, edges = _graph()
    return assert_ok(await client.post("/api/workflows", headers=user.headers, json={
        "name": f"wf-{uuid.uuid4().hex[:6]}", "companyId": company, "nodes": nodes, "edges": edges,
        "status": "active", **extra}), 201)


# --------------------------------------------------------------------------- schedules


def test_slots_follow_the_timezone() -> None:
    winter, summer = datetime(2030, 1, 10, 12, tzinfo=UTC), datetime(2030, 7, 10, 12, tzinfo=UTC)
    assert triggers.next_slot("0 9 * * *", "Europe/Paris", winter) == datetime(2030, 1, 11, 8, tzinfo=UTC)
    assert triggers.next_slot("0 9 * * *", "Europe/Paris", summer) == datetime(2030, 7, 11, 7, tzinfo=UTC)
    assert triggers.latest_slot("0 9 * * *", "Europe/Paris", datetime(2030, 1, 11, 8, tzinfo=UTC)) == datetime(2030, 1, 11, 8, tzinfo=UTC)
    # croniter's seconds field is the sixth, last one.
    assert triggers.next_slot("* * * * * */5", "UTC", datetime(2030, 1, 1, 0, 0, 1, tzinfo=UTC)) == datetime(2030, 1, 1, 0, 0, 5, tzinfo=UTC)


async def test_each_slot_fires_once_with_two_schedulers_and_after_a_restart(client, user):
    company = await make_company(user.id)
    nodes, edges = _graph()
    wf = await make_workflow(company, user.id, nodes, edges)
    # Yearly at midnight in Paris: the real scheduler (running now) never reaches these slots; the test's
    # schedulers run on an injected clock.
    schedule = assert_ok(await client.post(f"/api/workflows/{wf}/schedule", headers=user.headers, json={
        "enabled": True, "cron": "0 0 1 1 *", "timezone": "Europe/Paris", "variables": {"k": 7}}))
    slot = _parse(schedule["nextRun"])
    assert slot.month == 12 and slot.day == 31 and slot.hour == 23  # 00:00 in Paris (UTC+1)

    # Two schedulers (each on its own connections), four passes each, at the same instant.
    fired = await asyncio.gather(*(triggers.fire_due_schedules(now=slot + timedelta(seconds=1)) for _ in range(8)))
    assert sum(1 for batch in fired for t in batch if str(t.workflow_id) == wf) == 1
    runs = await _runs(wf, "schedule")
    assert len(runs) == 1 and runs[0].scheduled_at == slot and runs[0].meta["triggeredBy"] == "schedule"
    assert runs[0].run_state["variables"] == {"k": 7}

    # A restarted scheduler sees the slot consumed.
    assert not [t for t in await triggers.fire_due_schedules(now=slot + timedelta(seconds=2))
                if str(t.workflow_id) == wf]
    data = assert_ok(await client.get(f"/api/workflows/{wf}", headers=user.headers))["schedule"]
    assert _parse(data["lastRun"]) == slot
    assert _parse(data["nextRun"]) == triggers.next_slot("0 0 1 1 *", "Europe/Paris", slot)

    # Down for three years: the latest missed slot fires once, the two before it are skipped and logged.
    later = triggers.latest_slot("0 0 1 1 *", "Europe/Paris", slot + timedelta(days=3 * 366))
    fired = await asyncio.gather(*(triggers.fire_due_schedules(now=later + timedelta(hours=1)) for _ in range(4)))
    assert sum(1 for batch in fired for t in batch if str(t.workflow_id) == wf) == 1
    runs = await _runs(wf, "schedule")
    assert [r.scheduled_at for r in runs] == [slot, later]
    async with session_scope() as session:
        skipped = (await session.execute(select(models.Log.details).where(
            models.Log.source == "scheduler", models.Log.details["workflowId"].astext == wf))).scalars().all()
    assert [d.get("skipped") for d in skipped] == [2]
    data = assert_ok(await client.get(f"/api/workflows/{wf}", headers=user.headers))["schedule"]
    assert _parse(data["lastRun"]) == later and _parse(data["nextRun"]) > later + timedelta(hours=1)
    # (These slots lie in the future of the real clock, so their runs wait for them; the next test runs its runs.)


async def test_seconds_cron_runs_with_a_second_scheduler_actor(client, user):
    from troupe.actors.recovery import RecoveryActor

    company = await make_company(user.id)
    nodes, edges = _graph()
    wf = await make_workflow(company, user.id, nodes, edges)
    second = RecoveryActor.options(num_cpus=0).remote()  # a second scheduler next to the cluster's own
    try:
        assert_ok(await client.post(f"/api/workflows/{wf}/schedule", headers=user.headers,
                                    json={"enabled": True, "cron": "* * * * * */2", "timezone": "UTC"}))
        started = utcnow()
        deadline = time.monotonic() + 9
        while time.monotonic() < deadline:
            await second.fire_schedules.remote()
            await asyncio.sleep(0.3)
        assert_ok(await client.post(f"/api/workflows/{wf}/schedule", headers=user.headers,
                                    json={"enabled": False, "cron": "* * * * * */2", "timezone": "UTC"}))
    finally:
        ray.kill(second)
    runs = await _runs(wf, "schedule")
    slots = [r.scheduled_at for r in runs]
    assert len(runs) >= 3 and len(set(slots)) == len(slots)
    assert all(s.second % 2 == 0 and s.microsecond == 0 and s >= started - timedelta(seconds=2) for s in slots)
    data = assert_ok(await client.get(f"/api/workflows/{wf}", headers=user.headers))["schedule"]
    assert data["nextRun"] is None and _parse(data["lastRun"]) == max(slots)
    for run in runs:
        assert (await wait_status(client, user, str(run.id)))["status"] == "completed"


async def test_schedule_refusals(client, user):
    company = await make_company(user.id)
    nodes, edges = _graph()
    wf = await make_workflow(company, user.id, nodes, edges)
    for body, field in (({"cron": "61 * * * *", "timezone": "UTC"}, "cron"),
                        ({"cron": "0 * * * *", "timezone": "Mars/Olympus"}, "timezone")):
        assert_error(await client.post(f"/api/workflows/{wf}/schedule", headers=user.headers, json=body),
                     422, "VAL_001", field)


async def test_stopped_company_consumes_the_slot_without_a_run(client, user):
    company = await make_company(user.id)
    nodes, edges = _graph()
    wf = await make_workflow(company, user.id, nodes, edges)
    schedule = assert_ok(await client.post(f"/api/workflows/{wf}/schedule", headers=user.headers,
                                           json={"cron": "0 0 1 1 *", "timezone": "UTC"}))
    async with session_scope() as session:
        (await session.get(models.Company, uuid.UUID(company))).execution_stopped = True
    slot = _parse(schedule["nextRun"])
    await triggers.fire_due_schedules(now=slot + timedelta(seconds=1))
    assert await _runs(wf) == []
    data = assert_ok(await client.get(f"/api/workflows/{wf}", headers=user.headers))["schedule"]
    assert _parse(data["lastRun"]) == slot and _parse(data["nextRun"]) > slot


# --------------------------------------------------------------------------- webhook triggers


async def _signed_post(client, path: str, payload: bytes, secret: str = SECRET, stamp: int | None = None,
                       signature: str | None = None):
    stamp_text = str(stamp if stamp is not None else int(time.time()))
    return await client.post(path, content=payload, headers={
        "Content-Type": "application/json", "X-Troupe-Timestamp": stamp_text,
        "X-Troupe-Signature": signature or sign(secret, stamp_text, payload)})


async def test_signed_webhook_call_starts_a_run_and_bad_ones_write_nothing(client, user):
    company = await make_company(user.id)
    wf = await _api_workflow(client, user, company, triggers=[
        {"id": "hook", "type": "webhook", "configuration": {"secret": SECRET, "variables": {"v": 1}}}])
    assert SECRET not in json.dumps(wf)
    hook = wf["triggers"][0]["configuration"]
    assert hook["secret"] == "********" and hook["url"] == f"/api/workflows/{wf['id']}/triggers/hook/webhook"
    path = hook["url"]

    payload = json.dumps({"order": 42}).encode()
    for response, status in (
        (await _signed_post(client, path, payload, secret="wrong-secret-0123456789"), 401),
        (await _signed_post(client, path, payload, stamp=int(time.time()) - 3600), 401),
        (await client.post(path, content=payload), 401),
        (await _signed_post(client, path, payload, signature="sha256=00"), 401),
    ):
        assert_error(response, status, "AUTH_001")
    assert_error(await _signed_post(client, f"/api/workflows/{wf['id']}/triggers/nope/webhook", payload),
                 404, "RES_001")
    assert await _runs(wf["id"]) == []

    stamp = int(time.time())
    task = assert_ok(await _signed_post(client, path, payload, stamp=stamp), 202)
    assert task["metadata"]["source"] == "webhook" and task["metadata"]["triggeredBy"] == "webhook:hook"
    done = await wait_status(client, user, task["id"])
    assert done["status"] == "completed" and done["output"] == {"order": 42}
    # The same signed request again is a replay.
    assert_error(await _signed_post(client, path, payload, stamp=stamp), 401, "AUTH_001")
    assert len(await _runs(wf["id"])) == 1

    # Sending the mask back keeps the secret; other settings are checked.
    kept = assert_ok(await client.put(f"/api/workflows/{wf['id']}", headers=user.headers, json={"triggers": [
        {"id": "hook", "type": "webhook", "configuration": {"secret": "********"}}]}))
    assert kept["triggers"][0]["configuration"]["secret"] == "********"
    assert_ok(await _signed_post(client, path, b'{"again": true}'), 202)


async def test_trigger_settings_are_checked(client, user, other_user):
    company = await make_company(user.id)
    foreign = await make_company(other_user.id)
    nodes, edges = _graph()
    foreign_wf = await make_workflow(foreign, other_user.id, nodes, edges)
    for triggers_body, field in (
        ([{"id": "h", "type": "webhook", "configuration": {"secret": "short"}}], "triggers.0.configuration.secret"),
        ([{"id": "h", "type": "webhook", "configuration": {}}], "triggers.0.configuration.secret"),
        ([{"id": "h", "type": "webhook", "configuration": {"secret": SECRET, "retries": 3}}],
         "triggers.0.configuration.retries"),
        ([{"id": "e", "type": "event", "configuration": {"workflowId": foreign_wf}}],
         "triggers.0.configuration.workflowId"),
        ([{"id": "e", "type": "event", "configuration": {"workflowId": "x"}}], "triggers.0.configuration.workflowId"),
        ([{"id": "s", "type": "schedule"}], "triggers.0.type"),
        ([{"id": "f", "type": "file"}], "triggers.0.type"),
        ([{"id": "m", "type": "manual"}, {"id": "m", "type": "manual"}], "triggers.1.id"),
    ):
        nodes, edges = _graph()
        assert_error(await client.post("/api/workflows", headers=user.headers, json={
            "name": "bad", "companyId": company, "nodes": nodes, "edges": edges, "triggers": triggers_body}),
            422, "VAL_001", field)


# --------------------------------------------------------------------------- event triggers


async def test_event_trigger_starts_a_workflow_when_another_completes(client, user):
    company = await make_company(user.id)
    source = await _api_workflow(client, user, company)
    follower = await _api_workflow(client, user, company, triggers=[
        {"id": "after", "type": "event", "configuration": {"workflowId": source["id"]}}])
    on_failure = await _api_workflow(client, user, company, triggers=[
        {"id": "oops", "type": "event", "configuration": {"workflowId": source["id"], "on": "failed"}}])
    assert follower["triggers"][0]["configuration"] == {"workflowId": source["id"], "on": "completed"}

    first = await run_workflow(client, user, company, source["id"], {"n": 1})
    assert (await wait_status(client, user, first))["status"] == "completed"
    deadline = time.monotonic() + 30
    while not (runs := await _runs(follower["id"])) and time.monotonic() < deadline:  # noqa: ASYNC110 - polling
        await asyncio.sleep(0.2)
    assert len(runs) == 1 and runs[0].meta["parentTaskId"] == first
    assert runs[0].meta["triggeredBy"] == "event:after"
    done = await wait_status(client, user, str(runs[0].id))
    assert done["status"] == "completed" and done["output"] == {"n": 1}
    assert await _runs(on_failure["id"]) == []

    # At most one run per finished run and trigger, however often the hook is called.
    async with session_scope() as session:
        finished = await session.get(models.Task, uuid.UUID(first))
    assert await triggers.on_run_finished(finished) == []
    async with session_scope() as session:
        count = await session.scalar(select(func.count()).select_from(models.Task).where(
            models.Task.workflow_id == uuid.UUID(follower["id"])))
    assert count == 1


# --------------------------------------------------------------------------- scheduled batch tasks


async def test_scheduled_batch_tasks_run_at_their_time(client, user):
    company = await make_company(user.id)
    nodes, edges = _graph()
    wf = await make_workflow(company, user.id, nodes, edges)
    at = utcnow() + timedelta(seconds=3)
    created = assert_ok(await client.post("/api/tasks/batch", headers=user.headers, json={"tasks": [
        {"name": "later", "type": "scheduled", "companyId": company, "workflowId": wf, "input": {"x": 1},
         "scheduledAt": at.isoformat()}]}), 201)
    task = created["tasks"][0]
    assert task["status"] == "pending" and _parse(task["scheduledAt"]) == at.replace(microsecond=at.microsecond)
    done = await wait_status(client, user, task["id"], timeout=60)
    assert done["status"] == "completed" and done["output"] == {"x": 1}
    assert _parse(done["startedAt"]) >= at
    error = assert_error(await client.post("/api/tasks/batch", headers=user.headers, json={"tasks": [
        {"name": "when?", "type": "scheduled", "companyId": company, "workflowId": wf}]}),
        422, "VAL_001", "tasks[0].scheduledAt")
    assert error["details"]["errors"][0]["code"] == "VAL_002"


# --------------------------------------------------------------------------- item 6


async def test_company_retry_policy_applies_where_the_workflow_has_none(client, user):
    from troupe.engine.driver import _retry_policy

    policy = {"maxRetries": 4, "backoffStrategy": "linear", "initialDelay": 250, "maxDelay": 2000}
    company = await make_company(user.id, retryPolicy=policy)
    settings = {"retryPolicy": policy}  # as the driver reads it with the company's name
    assert _retry_policy({}, settings) == {"maxRetries": 4, "backoffStrategy": "linear",
                                           "initialDelay": 0.25, "maxDelay": 2.0}
    assert _retry_policy({"retryPolicy": None}, settings) == {
        "maxRetries": 4, "backoffStrategy": "linear", "initialDelay": 0.25, "maxDelay": 2.0}
    own = {"maxRetries": 1, "backoffStrategy": "exponential", "retryableErrors": []}
    assert _retry_policy({"retryPolicy": own}, settings) == own
    assert _retry_policy({}, {}) == {}

    # End to end: a node that fails twice with a retryable error completes under the company's policy.
    nodes = [node("in", "input"), node("flaky", "output", simulateFailAttempts=2)]
    wf = await make_workflow(company, user.id, nodes, chain("in", "flaky"))
    task_id = await run_workflow(client, user, company, wf, {"a": 1})
    task = await wait_status(client, user, task_id)
    assert task["status"] == "completed", task
    rows = assert_ok(await client.get(f"/api/tasks/{task_id}/executions?limit=100", headers=user.headers))
    assert sum(1 for r in rows if r["nodeId"] == "flaky") == 3
    assert set(task["metadata"]["resourceUsage"]) == {"tokens"}  # cpu/memory are not measured per run
