"""Times through real HTTP and WebSocket: every time the API gives is RFC 3339 with an
offset (UTC, ``Z``); every time it takes must carry one; the columns are ``timestamptz``
and read back in UTC whatever the connection's time zone."""

from __future__ import annotations

import asyncio
import re
import time
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from tests.test_realtime import connected
from tests.utils.ca_helpers import make_agent, make_company
from tests.utils.engine import chain, node
from tests.utils.fixtures import assert_error, assert_ok

# Anything that looks like a date-time (a date, a "T" or a space, then hours:minutes).
_LOOKS_LIKE_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}")
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")


def _times(value: Any, path: str = "") -> list[tuple[str, str]]:
    """Every (path, string) in a JSON document that looks like a date-time."""
    if isinstance(value, dict):
        return [t for k, v in value.items() for t in _times(v, f"{path}.{k}")]
    if isinstance(value, list):
        return [t for i, v in enumerate(value) for t in _times(v, f"{path}[{i}]")]
    if isinstance(value, str) and _LOOKS_LIKE_TIME.match(value):
        return [(path, value)]
    return []


def assert_utc_times(document: Any, *, at_least: int = 1) -> list[tuple[str, str]]:
    found = _times(document)
    assert len(found) >= at_least, (found, document)
    for path, text in found:
        assert _RFC3339.match(text), f"{path}: {text!r} is not RFC 3339 with an offset"
        assert text.endswith("Z"), f"{path}: {text!r} is not in UTC (Z)"
        parsed = datetime.fromisoformat(text)
        assert parsed.utcoffset() == timedelta(0), (path, text)
    return found


async def _workflow(client, user, company_id: str) -> dict:
    return assert_ok(await client.post("/api/workflows", headers=user.headers, json={
        "companyId": company_id, "name": "times", "status": "active",
        "nodes": [node("in", "input"), node("wait", "delay", seconds=0.2), node("out", "output", value="ok")],
        "edges": chain("in", "wait", "out"), "configuration": {"strategy": "sequential", "timeout": 60},
        "schedule": {"enabled": True, "cron": "0 3 * * *", "timezone": "Europe/Paris"}}), 201)


async def test_every_time_in_answers_is_utc_with_z(client, user):
    before = datetime.now(UTC) - timedelta(seconds=5)
    company = await make_company(client, user)
    agent = await make_agent(client, user, companyId=company["id"])
    workflow = await _workflow(client, user, company["id"])
    created = await client.post("/api/tasks", headers=user.headers, json={
        "name": "times", "type": "workflow", "companyId": company["id"], "workflowId": workflow["id"],
        "input": {}})
    task = assert_ok(created, 201)
    assert_ok(await client.post(f"/api/tasks/{task['id']}/execute", headers=user.headers, json={}), 202)
    deadline = time.monotonic() + 60
    while (done := assert_ok(await client.get(f"/api/tasks/{task['id']}", headers=user.headers)))["status"] \
            not in ("completed", "failed"):
        assert time.monotonic() < deadline, done
        await asyncio.sleep(0.2)
    assert done["status"] == "completed", done

    # The envelope's own times too (meta.timestamp), on every answer.
    answers = {
        "company": await client.get(f"/api/companies/{company['id']}", headers=user.headers),
        "agent": await client.get(f"/api/agents/{agent['id']}", headers=user.headers),
        "workflow": await client.get(f"/api/workflows/{workflow['id']}", headers=user.headers),
        "task": await client.get(f"/api/tasks/{task['id']}", headers=user.headers),
        "tasks": await client.get("/api/tasks", headers=user.headers, params={"companyId": company["id"]}),
        "executions": await client.get(f"/api/tasks/{task['id']}/executions", headers=user.headers),
        "task logs": await client.get(f"/api/tasks/{task['id']}/logs", headers=user.headers),
        "me": await client.get("/api/users/me", headers=user.headers),
        "notifications": await client.get("/api/notifications", headers=user.headers),
        "company logs": await client.get(f"/api/companies/{company['id']}/logs", headers=user.headers),
        "company export": await client.post(f"/api/companies/{company['id']}/export", headers=user.headers),
        "workflow export": await client.post(f"/api/workflows/{workflow['id']}/export", headers=user.headers),
    }
    for name, response in answers.items():
        assert response.status_code in (200, 201), (name, response.text)
        found = dict(assert_utc_times(response.json()))
        assert ".meta.timestamp" in found, name
    task_body = answers["task"].json()["data"]
    for field in ("createdAt", "startedAt", "completedAt", "queuedAt"):
        at = datetime.fromisoformat(task_body[field])
        assert before <= at <= datetime.now(UTC) + timedelta(seconds=5), (field, task_body[field])
    schedule = answers["workflow"].json()["data"]["schedule"]
    next_run = datetime.fromisoformat(schedule["nextRun"])
    # 03:00 in Paris is 01:00 or 02:00 UTC: the answer is the same instant, told in UTC.
    assert next_run.astimezone(UTC).hour in (1, 2) and schedule["nextRun"].endswith("Z"), schedule
    assert any(row["startedAt"] for row in answers["executions"].json()["data"])
    # Error envelopes carry UTC times too.
    refused = await client.get("/api/tasks/00000000-0000-0000-0000-000000000000", headers=user.headers)
    assert refused.status_code == 404
    found = dict(assert_utc_times(refused.json(), at_least=2))
    assert ".error.timestamp" in found and ".meta.timestamp" in found


async def test_websocket_event_times_carry_z(client, base_url, user):
    company = await make_company(client, user)
    workflow = await _workflow(client, user, company["id"])
    task = assert_ok(await client.post("/api/tasks", headers=user.headers, json={
        "name": "ws times", "type": "workflow", "companyId": company["id"], "workflowId": workflow["id"]}), 201)
    sess, ws = await connected(base_url, user.token)
    try:
        joined = await ws.request("join_room", {"room": f"task:{task['id']}"})
        assert joined["type"] == "join_room", joined
        assert_utc_times(joined)
        assert_ok(await client.post(f"/api/tasks/{task['id']}/execute", headers=user.headers, json={}), 202)
        progress = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            msg = await ws.recv(max(0.1, deadline - time.monotonic()))
            if msg["type"] == "task:progress":
                progress.append(msg)
                if msg["payload"]["status"] in ("completed", "failed", "cancelled"):
                    break
    finally:
        await sess.__aexit__(None, None, None)
    assert progress and progress[-1]["payload"]["status"] == "completed", progress
    for msg in progress:
        found = dict(assert_utc_times(msg))
        assert ".timestamp" in found, msg
    # A running step announces its estimated completion: a time, so UTC with Z as well.
    assert any("estimatedCompletion" in m["payload"] for m in progress), progress


async def test_times_without_an_offset_are_refused_naming_the_field(client, user):
    company = await make_company(client, user)
    workflow = await _workflow(client, user, company["id"])
    body = {"name": "naive", "type": "scheduled", "companyId": company["id"], "workflowId": workflow["id"]}
    for naive in ("2030-01-01T12:00:00", "2030-01-01 12:00:00", "2030-01-01T12:00:00.250"):
        error = assert_error(await client.post("/api/tasks", headers=user.headers,
                                               json={**body, "scheduledAt": naive}), 422, "VAL_003", "scheduledAt")
        assert "timezone" in error["message"].lower() or "offset" in error["message"].lower(), error
    batch = {"tasks": [{**body, "scheduledAt": "2030-01-01T12:00:00Z"}, {**body, "scheduledAt": "2030-01-01T12:00"}]}
    assert_error(await client.post("/api/tasks/batch", headers=user.headers, json=batch), 422, "VAL_003",
                 "tasks.1.scheduledAt")
    created = assert_ok(await client.post("/api/tasks", headers=user.headers, json={
        **body, "scheduledAt": "2030-01-01T12:00:00Z"}), 201)
    assert_error(await client.put(f"/api/tasks/{created['id']}", headers=user.headers,
                                  json={"scheduledAt": "2030-06-01T08:00:00"}), 422, "VAL_003", "scheduledAt")
    # Query parameters as well.
    assert_error(await client.get("/api/tasks", headers=user.headers, params={"startDate": "2030-01-01T00:00:00"}),
                 422, "VAL_003", "startDate")
    assert_error(await client.get(f"/api/tasks/{created['id']}/logs", headers=user.headers,
                                  params={"endDate": "2030-01-01T00:00:00"}), 422, "VAL_003", "endDate")
    assert_error(await client.get(f"/api/companies/{company['id']}/metrics", headers=user.headers,
                                  params={"startDate": "2030-01-01T00:00:00"}), 422, "VAL_003", "startDate")


async def test_an_offset_time_comes_back_as_the_same_instant_in_utc(client, user):
    company = await make_company(client, user)
    workflow = await _workflow(client, user, company["id"])
    task = assert_ok(await client.post("/api/tasks", headers=user.headers, json={
        "name": "paris", "type": "scheduled", "companyId": company["id"], "workflowId": workflow["id"],
        "scheduledAt": "2030-01-01T12:00:00+02:00"}), 201)
    assert task["scheduledAt"] == "2030-01-01T10:00:00Z", task
    moved = assert_ok(await client.put(f"/api/tasks/{task['id']}", headers=user.headers,
                                       json={"scheduledAt": "2030-06-01T08:30:00.5-04:30"}))
    assert moved["scheduledAt"].endswith("Z"), moved
    again = assert_ok(await client.get(f"/api/tasks/{task['id']}", headers=user.headers))
    assert datetime.fromisoformat(again["scheduledAt"]) == datetime(2030, 6, 1, 13, 0, 0, 500000, tzinfo=UTC)
    # A share's expiry, too.
    upload = await client.post("/api/files/upload", headers=user.headers, files={"file": ("t.txt", b"times")})
    file = assert_ok(upload, 201)
    expires = (datetime.now(UTC) + timedelta(days=2)).replace(microsecond=0)
    assert_error(await client.post(f"/api/files/{file['id']}/share", headers=user.headers, json={
        "expiresAt": expires.replace(tzinfo=None).isoformat()}), 422, "VAL_003", "expiresAt")
    share = assert_ok(await client.post(f"/api/files/{file['id']}/share", headers=user.headers, json={
        "expiresAt": expires.astimezone(timezone(timedelta(hours=2))).isoformat()}), 201)
    assert share["expiresAt"].endswith("Z") and datetime.fromisoformat(share["expiresAt"]) == expires, share
    # A filter given with an offset selects by the instant: the task was created a moment ago.
    now = datetime.now(UTC)
    for start, found in ((now - timedelta(minutes=5), True), (now + timedelta(minutes=5), False)):
        local = start.replace(microsecond=0).astimezone(timezone(timedelta(hours=2)))
        rows = assert_ok(await client.get("/api/tasks", headers=user.headers, params={
            "companyId": company["id"], "startDate": local.isoformat()}))
        assert (task["id"] in [r["id"] for r in rows]) is found, (local.isoformat(), rows)


async def test_timestamp_columns_are_timestamptz_and_read_in_utc(client, user):
    import psycopg
    from sqlalchemy import select
    from sqlalchemy.ext.asyncio import create_async_engine

    from troupe.config import get_settings
    from troupe.db import models
    from troupe.db.session import sqlalchemy_url

    url = get_settings().database_url
    with psycopg.connect(sqlalchemy_url(url).replace("postgresql+psycopg://", "postgresql://", 1)) as conn:
        columns = conn.execute("""
            SELECT table_name, column_name, data_type FROM information_schema.columns
            WHERE table_schema = 'public' AND data_type LIKE 'timestamp%'""").fetchall()
        heads = {r[0] for r in conn.execute("SELECT version_num FROM alembic_version").fetchall()}
    assert len(columns) >= 50, columns
    naive = [f"{t}.{c}" for t, c, kind in columns if kind != "timestamp with time zone"]
    assert not naive, f"columns without a time zone: {naive}"
    assert ("tasks", "lease_expires_at", "timestamp with time zone") in columns
    assert heads, heads

    # The connection's time zone plays no part: a session in Auckland reads the same UTC instant.
    company = await make_company(client, user)
    workflow = await _workflow(client, user, company["id"])
    task = assert_ok(await client.post("/api/tasks", headers=user.headers, json={
        "name": "tz", "type": "scheduled", "companyId": company["id"], "workflowId": workflow["id"],
        "scheduledAt": "2030-01-01T12:00:00-05:00"}), 201)
    engine = create_async_engine(sqlalchemy_url(url), connect_args={"options": "-c timezone=Pacific/Auckland"})
    try:
        async with engine.connect() as conn:
            row = (await conn.execute(select(models.Task.scheduled_at, models.Task.created_at).where(
                models.Task.id == task["id"]))).one()
            zone = (await conn.exec_driver_sql("SHOW timezone")).scalar_one()
    finally:
        await engine.dispose()
    assert zone == "Pacific/Auckland"
    assert row.scheduled_at == datetime(2030, 1, 1, 17, tzinfo=UTC) and row.scheduled_at.utcoffset() == timedelta(0)
    assert row.created_at.utcoffset() == timedelta(0)
    assert row.created_at == datetime.fromisoformat(task["createdAt"])
