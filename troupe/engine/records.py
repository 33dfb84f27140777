"""Durable records of runs, written by the run driver (inside the CompanyActor's event loop).

Node tasks do no database work. The driver buffers what a wave of nodes produced
(attempts started, attempts finished, their log lines, tool calls, the task's
progress) in a ``Ledger`` and writes it in ONE statement, before it starts any
node downstream, so a resumed run rebuilds exactly from ``task_executions``.

Every ledger write is fenced by the run's lease: the statement renews
``tasks.lease_expires_at`` only where ``tasks.lease_epoch`` still equals the epoch
this driver claimed, and writes nothing else when it does not (``Fenced``). A
driver that lost its lease (a newer driver claimed the run) therefore cannot land
a single record.

Postgres or Redis outages are waited out: ``durable`` retries a write with
jittered backoff for as long as the failure is an outage (``troupe.infra.faults``).
Events are published to Redis in pipelines by a per-process background pump.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from psycopg.errors import IntegrityError
from psycopg_pool import AsyncConnectionPool
from sqlalchemy import update
from tenacity import AsyncRetrying, retry_if_exception, wait_random_exponential

from troupe.config import get_settings
from troupe.db import models
from troupe.db.session import connect_timeouts, read_bounded, session_scope, sqlalchemy_url
from troupe.events.bus import publish_many
from troupe.events.notifications import deliver
from troupe.infra.faults import is_outage, outage_of
from troupe.timeutil import iso, utcnow

log = logging.getLogger("troupe.engine")
T = TypeVar("T")
# A lease outlives a few missed heartbeats (CompanyActor renews every LEASE_RENEW_SECONDS).
LEASE_SECONDS = 20.0
LEASE_RENEW_SECONDS = 5.0
# A ledger statement is small; no answer within this is an outage.
LEDGER_READ_SECONDS = 10.0


class Fenced(Exception):
    """This driver's lease epoch is no longer the run's: a newer driver owns the run."""


async def durable(op: Callable[[], Awaitable[T]], *, what: str) -> T:
    """Run ``op`` until it succeeds; an outage of Postgres or Redis is waited out with
    jittered exponential backoff (capped at 5 s), anything else is raised."""
    attempt = 0
    async for try_ in AsyncRetrying(retry=retry_if_exception(is_outage), wait=wait_random_exponential(0.1, 5.0),
                                    reraise=True):
        with try_:
            if attempt:
                log.warning("%s: retrying after an outage (attempt %d)", what, attempt + 1)
            attempt += 1
            return await op()
    raise AssertionError("unreachable")  # AsyncRetrying either returns or re-raises


# ---------------------------------------------------------------- the ledger's connection
_pool: AsyncConnectionPool | None = None


async def ledger_pool() -> AsyncConnectionPool:
    """Plain psycopg autocommit connections (no ORM on the hot path): a ledger write is
    one prepared statement, so one round trip. Every wait for the server is bounded, so a
    hung (not stopped) Postgres is an outage that ``durable`` waits out, not a stuck driver."""
    global _pool
    if _pool is None:
        settings = get_settings()
        if not settings.database_url:
            raise RuntimeError("DATABASE_URL is not set; start through troupe.infra.bootstrap")
        conninfo = sqlalchemy_url(settings.database_url).replace("postgresql+psycopg://", "postgresql://", 1)
        _pool = AsyncConnectionPool(
            conninfo, min_size=1, max_size=16, timeout=5, open=False, connection_class=read_bounded(
                LEDGER_READ_SECONDS), kwargs={"autocommit": True, "options": "-c timezone=UTC",
                                              **connect_timeouts(settings)})
        await _pool.open(wait=False)
    return _pool


async def _rows(sql: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
    async with (await ledger_pool()).connection() as conn:
        cursor = await conn.execute(sql, params)  # type: ignore[arg-type]
        return await cursor.fetchall() if cursor.description else []


def _json(value: Any) -> str:
    return json.dumps(value, default=str, separators=(",", ":"))


def _ts(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


# One statement: renew the lease (fence), then everything else only FROM lease. Postgres runs
# every data-modifying WITH part exactly once, so the parts a wave has nothing for are left out.
_LEASE = """
WITH lease AS (
  UPDATE tasks SET lease_expires_at = now() + make_interval(secs => %(ttl)s),
         progress = COALESCE(%(progress)s::int, progress),
         current_step = COALESCE(%(step)s::varchar, current_step),
         total_steps = COALESCE(%(total)s::int, total_steps),
         estimated_completion = COALESCE(%(eta)s::timestamptz, estimated_completion)
  WHERE id = %(task)s AND lease_epoch = %(epoch)s RETURNING id
)"""
_PARTS = {
    "starts": """, started AS (
  INSERT INTO task_executions (id, task_id, node_id, iteration, attempt, retry_count, status, input, output,
                               error, started_at, completed_at, execution_time, agent_id, tool_id,
                               idempotency_key, metadata)
  SELECT r.id, lease.id, r.node_id, r.iteration, r.attempt, r.attempt, r.status, r.input, r.output, r.error,
         r.started_at, r.completed_at, r.execution_time, r.agent_id, r.tool_id, r.idempotency_key,
         COALESCE(r.meta, '{}'::jsonb)
  FROM lease, jsonb_to_recordset(%(starts)s::jsonb) AS r(
    id uuid, node_id text, iteration int, attempt int, status text, input jsonb, output jsonb, error text,
    started_at timestamptz, completed_at timestamptz, execution_time int, agent_id uuid, tool_id uuid,
    idempotency_key text, meta jsonb)
)""",
    "finishes": """, finished AS (
  UPDATE task_executions AS t SET status = f.status, output = f.output, error = f.error, metadata = f.meta,
         completed_at = f.completed_at, execution_time = f.execution_time
  FROM lease, jsonb_to_recordset(%(finishes)s::jsonb) AS f(
    id uuid, status text, output jsonb, error text, meta jsonb, completed_at timestamptz, execution_time int)
  WHERE t.id = f.id
)""",
    "logs": """, logged AS (
  INSERT INTO logs (id, level, source, message, details, user_id, company_id, task_id, duration, created_at)
  SELECT gen_random_uuid(), l.level, 'engine', l.message, l.details, l.user_id, l.company_id, lease.id,
         l.duration, l.created_at
  FROM lease, jsonb_to_recordset(%(logs)s::jsonb) AS l(
    level text, message text, details jsonb, user_id uuid, company_id uuid, duration int, created_at timestamptz)
)""",
    "calls": """, called AS (
  INSERT INTO tool_calls (id, tool_id, company_id, task_id, user_id, success, duration_ms, error, created_at)
  SELECT gen_random_uuid(), c.tool_id, c.company_id, lease.id, c.user_id, c.success, c.duration_ms, c.error,
         c.created_at
  FROM lease, jsonb_to_recordset(%(calls)s::jsonb) AS c(
    tool_id uuid, company_id uuid, user_id uuid, success boolean, duration_ms int, error text,
    created_at timestamptz)
  RETURNING tool_id
), used AS (
  UPDATE tools SET last_used_at = now() WHERE id IN (SELECT tool_id FROM called)
)""",
}
_flush_sql: dict[tuple[str, ...], str] = {}


def _flush_statement(parts: tuple[str, ...]) -> str:
    sql = _flush_sql.get(parts)
    if sql is None:
        sql = _flush_sql[parts] = _LEASE + "".join(_PARTS[p] for p in parts) + "\nSELECT count(*) FROM lease"
    return sql


@dataclass
class Ledger:
    """What one run's driver has to record, flushed as one fenced statement."""

    task_id: uuid.UUID
    epoch: int
    company_id: uuid.UUID | None = None
    user_id: uuid.UUID | None = None
    starts: list[dict[str, Any]] = field(default_factory=list)
    finishes: list[dict[str, Any]] = field(default_factory=list)
    logs: list[dict[str, Any]] = field(default_factory=list)
    calls: list[dict[str, Any]] = field(default_factory=list)
    progress: dict[str, Any] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.starts or self.finishes or self.logs or self.calls or self.progress)

    def start(self, *, node_id: str, iteration: int, attempt: int, input_: Any, agent_id: str | None = None,
              tool_id: str | None = None, idempotency_key: str | None = None,
              meta: dict[str, Any] | None = None) -> uuid.UUID:
        row_id = uuid.uuid4()
        self.starts.append({"id": str(row_id), "node_id": node_id, "iteration": iteration, "attempt": attempt,
                            "status": "running", "input": input_, "started_at": _ts(utcnow()),
                            "agent_id": agent_id, "tool_id": tool_id, "idempotency_key": idempotency_key,
                            "meta": {**(meta or {}), "epoch": self.epoch}})
        return row_id

    def finish(self, row_id: uuid.UUID, *, status: str, output: Any = None, error: str | None = None,
               meta: dict[str, Any] | None = None, started: datetime | None = None) -> None:
        now = utcnow()
        row = {"id": str(row_id), "status": status, "output": output, "error": error,
               "meta": {**(meta or {}), "epoch": self.epoch},
               "completed_at": _ts(now),
               "execution_time": int((now - started).total_seconds() * 1000) if started else None}
        pending = next((s for s in self.starts if s["id"] == row["id"]), None)
        if pending is not None:  # started and finished within one wave: one insert
            pending.update(row)
        else:
            self.finishes.append(row)

    def record(self, *, node_id: str, iteration: int, status: str, input_: Any, output: Any = None,
               error: str | None = None, meta: dict[str, Any] | None = None) -> None:
        """A node the driver evaluated itself (loop bookkeeping): one row, already finished."""
        self.finish(self.start(node_id=node_id, iteration=iteration, attempt=0, input_=input_), status=status,
                    output=output, error=error, meta=meta)

    def log(self, level: str, message: str, *, node_id: str | None = None, details: dict[str, Any] | None = None,
            duration: int | None = None) -> None:
        self.logs.append({"level": level, "message": message, "duration": duration,
                          "details": {**(details or {}), **({"nodeId": node_id} if node_id else {})},
                          "user_id": None, "company_id": str(self.company_id) if self.company_id else None,
                          "created_at": _ts(utcnow())})

    def tool_call(self, *, tool_id: str, ok: bool, duration_ms: int, error: str | None) -> None:
        self.calls.append({"tool_id": tool_id, "company_id": str(self.company_id) if self.company_id else None,
                           "user_id": str(self.user_id) if self.user_id else None, "success": ok,
                           "duration_ms": duration_ms, "error": None if ok else error,
                           "created_at": _ts(utcnow())})

    def set_progress(self, *, progress: int, step: str, total: int, eta: datetime | None) -> None:
        self.progress = {"progress": progress, "step": step[:255], "total": total, "eta": _ts(eta)}

    async def flush(self) -> None:
        """Write everything buffered in one fenced statement (waiting out outages);
        ``Fenced`` if the lease was taken over, and then nothing was written."""
        if not self:
            return
        params: dict[str, Any] = {"task": self.task_id, "epoch": self.epoch, "ttl": LEASE_SECONDS,
                                  "progress": self.progress.get("progress"), "step": self.progress.get("step"),
                                  "total": self.progress.get("total"), "eta": self.progress.get("eta")}
        parts = tuple(name for name in _PARTS if getattr(self, name))
        for name in parts:
            params[name] = _json(getattr(self, name))
        sql = _flush_statement(parts)

        async def write() -> int:
            return int((await _rows(sql, params))[0][0])

        try:
            held = await durable(write, what=f"run {self.task_id} records")
        except IntegrityError:
            # A completed row for the same node/iteration already exists (only possible after a
            # takeover race the fence lost): keep ours as skipped, never two completions.
            await self._demote_duplicates()
            return await self.flush()
        if not held:
            raise Fenced(f"run {self.task_id}: lease epoch {self.epoch} was superseded")
        self.starts, self.finishes, self.logs, self.calls, self.progress = [], [], [], [], {}

    async def _demote_duplicates(self) -> None:
        done = {(r[0], r[1]) for r in await _rows(
            "SELECT node_id, iteration FROM task_executions WHERE task_id = %(t)s AND status = 'completed'",
            {"t": self.task_id})}
        for row in self.starts:
            if row["status"] == "completed" and (row["node_id"], row["iteration"]) in done:
                row.update(status="skipped", error="duplicate of an earlier completed execution")
        if self.finishes:
            keys = {str(r[0]): (r[1], r[2]) for r in await _rows(
                "SELECT id, node_id, iteration FROM task_executions WHERE id = ANY(%(ids)s::uuid[])",
                {"ids": [f["id"] for f in self.finishes]})}
            for row in self.finishes:
                if row["status"] == "completed" and keys.get(row["id"]) in done:
                    row.update(status="skipped", error="duplicate of an earlier completed execution")


# ---------------------------------------------------------------- leases (CompanyActor)
_CLAIM = """
WITH claimed AS (
  UPDATE tasks SET status = 'running',
         started_at = COALESCE(started_at, now()),
         lease_epoch = lease_epoch + 1,
         lease_expires_at = now() + make_interval(secs => %(ttl)s),
         run_state = jsonb_set(COALESCE(run_state, '{}'::jsonb), '{parkedUntil}', 'null'::jsonb)
  WHERE id = ANY(%(ids)s::uuid[]) AND company_id = %(company)s
    AND ((status = 'pending' AND queued_at IS NOT NULL AND queued_at <= now()
          AND (scheduled_at IS NULL OR scheduled_at <= now()))
         OR (status = 'running' AND (%(takeover)s OR lease_expires_at IS NULL
                                     OR lease_expires_at < now())))
  RETURNING id, lease_epoch, name, created_by, company_id
), logged AS (
  INSERT INTO logs (id, level, source, message, details, user_id, company_id, task_id, created_at)
  SELECT gen_random_uuid(), 'info', 'engine', 'run admitted: ' || c.name, jsonb_build_object('epoch', c.lease_epoch),
         c.created_by, c.company_id, c.id, now()
  FROM claimed c
)
SELECT id, lease_epoch FROM claimed
"""


async def claim_runs(company_id: uuid.UUID, task_ids: list[uuid.UUID], *, takeover: bool = False
                     ) -> dict[uuid.UUID, int]:
    """Start driving these runs: pending ones become running; running ones are taken
    over only if their lease expired (or ``takeover``: the company's previous actor is
    gone). Each claim bumps the run's lease epoch. Returns the claimed ids -> epoch."""
    if not task_ids:
        return {}

    async def write() -> dict[uuid.UUID, int]:
        rows = await _rows(_CLAIM, {"ids": [str(t) for t in task_ids], "company": company_id,
                                    "ttl": LEASE_SECONDS, "takeover": takeover})
        return {row[0]: int(row[1]) for row in rows}

    return await durable(write, what=f"company {company_id} claims")


async def renew_leases(leases: dict[uuid.UUID, int]) -> set[uuid.UUID]:
    """Heartbeat for the runs driven here; returns the ids whose lease is still ours."""
    if not leases:
        return set()
    rows = await _rows("""
        UPDATE tasks AS t SET lease_expires_at = now() + make_interval(secs => %(ttl)s)
        FROM jsonb_to_recordset(%(leases)s::jsonb) AS l(id uuid, epoch int)
        WHERE t.id = l.id AND t.lease_epoch = l.epoch AND t.status = 'running' RETURNING t.id""",
        {"ttl": LEASE_SECONDS, "leases": _json([{"id": str(k), "epoch": v} for k, v in leases.items()])})
    return {row[0] for row in rows}


# ---------------------------------------------------------------- plain writes (not on the hot path)
async def write_log(*, task_id: uuid.UUID, company_id: uuid.UUID | None, level: str, message: str,
                    node_id: str | None = None, details: dict[str, Any] | None = None,
                    duration: int | None = None, user_id: uuid.UUID | None = None) -> None:
    async def write() -> None:
        async with session_scope() as session:
            session.add(models.Log(level=level, source="engine", message=message, task_id=task_id,
                                   company_id=company_id, user_id=user_id, duration=duration,
                                   details={**(details or {}), **({"nodeId": node_id} if node_id else {})}))

    await durable(write, what=f"log of run {task_id}")


async def fenced_task_update(task_id: uuid.UUID, epoch: int, *, statuses: tuple[str, ...] = ("running",),
                             **values: Any) -> models.Task | None:
    """Update the run's row only if it is still in ``statuses`` under this driver's lease
    epoch; the updated row, or None (cancelled meanwhile, or fenced)."""
    async def write() -> models.Task | None:
        async with session_scope() as session:
            result = await session.execute(update(models.Task).where(
                models.Task.id == task_id, models.Task.status.in_(statuses), models.Task.lease_epoch == epoch)
                .values(**values).returning(models.Task))
            return result.scalar_one_or_none()

    return await durable(write, what=f"run {task_id} state")


# ---------------------------------------------------------------- events
class _EventPump:
    """Events of this process, published to Redis in pipelines by one background task,
    so a run never waits on Redis for an event (and a Redis outage only delays them)."""

    MAX_BUFFER = 50_000

    def __init__(self) -> None:
        self.buffer: list[tuple[list[str], str, dict[str, Any], str | None, str | None]] = []
        self.wakeup: asyncio.Event | None = None
        self.task: asyncio.Task[None] | None = None

    def put(self, rooms: list[str], type_: str, payload: dict[str, Any], company_id: str | None,
            user_id: str | None) -> None:
        if len(self.buffer) >= self.MAX_BUFFER:  # Redis has been away long: drop the oldest, keep running
            del self.buffer[: len(self.buffer) // 10]
        self.buffer.append((rooms, type_, payload, company_id, user_id))
        loop = asyncio.get_running_loop()
        if self.task is None or self.task.done() or self.task.get_loop() is not loop:
            self.wakeup = asyncio.Event()
            self.task = loop.create_task(self._run())
        assert self.wakeup is not None
        self.wakeup.set()

    async def _run(self) -> None:
        assert self.wakeup is not None
        while True:
            await self.wakeup.wait()
            self.wakeup.clear()
            await asyncio.sleep(0.002)  # let a wave's events gather into one pipeline
            while self.buffer:
                batch, self.buffer = self.buffer[:500], self.buffer[500:]
                try:
                    await publish_many(batch)
                except Exception as exc:
                    if outage_of(exc) is None:
                        log.exception("could not publish %d events", len(batch))
                        continue
                    self.buffer[:0] = batch  # Redis is away: keep them and try again shortly
                    await asyncio.sleep(1.0)


events = _EventPump()


async def emit(type_: str, rooms: list[str], payload: dict[str, Any], *, company_id: str | None = None,
               user_id: str | None = None) -> None:
    """Queue an event for publishing; never blocks on Redis."""
    events.put(list(dict.fromkeys(rooms)), type_, payload, company_id, user_id)


def progress_payload(task: models.Task | Any, *, message: str | None = None, tokens: int | None = None,
                     cost: float | None = None, progress: int | None = None, status: str | None = None,
                     step: str | None = None, total: int | None = None, eta: datetime | None = None
                     ) -> dict[str, Any]:
    payload: dict[str, Any] = {"taskId": str(task.id), "progress": progress if progress is not None
                               else task.progress or 0, "status": status or task.status,
                               "currentStep": step if step is not None else task.current_step,
                               "totalSteps": total if total is not None else task.total_steps}
    if message:
        payload["message"] = message
    eta = eta if eta is not None else task.estimated_completion
    if eta:
        payload["estimatedCompletion"] = iso(eta)
    if tokens is not None:
        payload["metadata"] = {"tokensUsed": tokens, "cost": cost or 0}
    return payload


def progress_event_args(task: models.Task | Any, **fields: Any
                        ) -> tuple[list[str], str, dict[str, Any], str | None, None]:
    """A ``task:progress`` event as ``events.put`` takes it: the task's and its company's rooms."""
    company = str(task.company_id) if task.company_id else None
    rooms = [f"task:{task.id}"] + ([f"company:{company}"] if company else [])
    return rooms, "task:progress", progress_payload(task, **fields), company, None


async def progress_event(task: models.Task | Any, **fields: Any) -> None:
    events.put(*progress_event_args(task, **fields))


async def notify(user_id: uuid.UUID | None, *, level: str, title: str, message: str, data: dict[str, Any]) -> None:
    """Tell the task's creator: a stored notification sent by their channels
    (``user:notification``), and the spec's toast event (``notification``)."""
    if user_id is None:
        return

    async def write() -> Any:
        async with session_scope() as session:
            return await deliver(session, user_id=user_id, type_="completion" if level == "success" else "error",
                                 title=title, message=message, data=data, category="task",
                                 priority="high" if level == "error" else "medium")

    try:
        delivered = await durable(write, what=f"notification to {user_id}")
    except Exception:  # the run is finished either way; a lost notice must not fail it
        log.exception("could not notify %s", user_id)
        return
    await emit("notification", [f"user:{user_id}"], {"id": str(delivered.row.id), "level": level, "title": title,
                                                     "message": message, "category": "task"},
               user_id=str(user_id))
