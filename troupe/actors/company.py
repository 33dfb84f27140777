"""CompanyActor: one virtual actor per company (named ``company:<id>``) that owns admission.

- Status comes from ``companies.status`` (active, idle, paused, maintenance,
  error) and ``companies.execution_stopped`` (set by stop, cleared by start).
- At most ``settings.maxConcurrency`` (default 5) runs are driven at once, and
  every run of the company is driven here, so the limit holds cluster-wide.
- ``settings.apiRateLimit`` bounds run starts per minute (waiting, not failing).
- The queue is the company's ``pending`` rows with ``queued_at`` set, ordered
  in SQL by priority (urgent > high > medium > low) with aging: every
  ``AGING_SECONDS`` of waiting raises a task one priority level, FIFO within a level.
- Runs parked by a long delay stay ``running`` with ``run_state.parkedUntil``
  and hold no slot; they are re-admitted (ahead of the queue) when due.
- On activation the actor resumes the runs that were ``running`` without a
  driver (its previous incarnation died): they continue from their completed nodes.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

import ray
from sqlalchemy import case, func, literal_column, or_, select, update

from troupe import runtime_settings
from troupe.actors import residency
from troupe.db import models
from troupe.db.session import session_scope, set_pool
from troupe.engine import records
from troupe.engine.driver import RunControl, RunDriver
from troupe.events.alerts import raise_alert
from troupe.infra import ratelimit
from troupe.timeutil import utcnow

log = logging.getLogger("troupe.engine")
AGING_SECONDS = 30
DEFAULT_MAX_CONCURRENCY = 5
HELD_STATUSES = frozenset({"paused", "maintenance", "error"})
PRIORITY_RANK = {"urgent": 0, "high": 1, "medium": 2, "low": 3}


def queue_order() -> list[Any]:
    rank = case(PRIORITY_RANK, value=models.Task.priority, else_=2)
    waited = func.extract("epoch", func.now() - models.Task.queued_at)
    return [rank * AGING_SECONDS - waited, models.Task.queued_at]


@ray.remote
class CompanyActor:
    def __init__(self, company_id: str) -> None:
        set_pool("company")
        self.company_id = uuid.UUID(company_id)
        self.runs: dict[uuid.UUID, tuple[RunControl, asyncio.Task[str]]] = {}
        self.activated = False
        self.lock: asyncio.Lock | None = None
        self.ticker: asyncio.Task[None] | None = None
        # Wake-ups coalesce: while one pump runs, later requests only mark it to go again,
        # so a burst of submits costs one admission pass, not one each behind the lock.
        self.pump_requested = False
        self.pump_task: asyncio.Task[None] | None = None
        self.watch = residency.IdleWatch(lambda: bool(self.runs))

    async def _activate(self) -> None:
        self.watch.touch()
        if self.activated:
            return
        self.activated = True
        self.lock = asyncio.Lock()
        async with session_scope() as session:
            orphans = (await session.execute(select(models.Task.id).where(
                models.Task.company_id == self.company_id, models.Task.status == "running",
                models.Task.run_state["parkedUntil"].astext.is_(None)))).scalars().all()
        for task_id in orphans:
            await records.write_log(task_id=task_id, company_id=self.company_id, level="warn",
                                    message="run resumed by a new company actor (previous driver lost)")
            self._drive(task_id)
        if orphans:
            await raise_alert(severity="medium", title="Runs resumed after a lost driver",
                              description=f"{len(orphans)} run(s) of company {self.company_id} lost their driver "
                                          "(actor or node died) and were resumed; completed nodes are not re-run.",
                              source="engine", affected=["engine", f"company:{self.company_id}"],
                              actions=["Check the Ray dashboard for dead actors or nodes"])
        self.ticker = asyncio.get_running_loop().create_task(self._tick())

    async def _tick(self) -> None:
        while True:
            try:
                await self.pump()
            except Exception:
                log.exception("company %s pump failed", self.company_id)
            await asyncio.sleep(0.5)

    def _drive(self, task_id: uuid.UUID) -> None:
        control = RunControl()
        fut = asyncio.get_running_loop().create_task(RunDriver(task_id, control).run())
        self.runs[task_id] = (control, fut)
        fut.add_done_callback(lambda _f, tid=task_id: self._finished(tid))

    def _finished(self, task_id: uuid.UUID) -> None:
        self.runs.pop(task_id, None)
        self.watch.touch()
        self._request_pump()

    def _request_pump(self) -> None:
        self.pump_requested = True
        if self.pump_task is None or self.pump_task.done():
            self.pump_task = asyncio.get_running_loop().create_task(self._pump_while_requested())

    async def _pump_while_requested(self) -> None:
        while self.pump_requested:
            self.pump_requested = False
            try:
                await self.pump()
            except Exception:
                log.exception("company %s pump failed", self.company_id)

    async def _company(self) -> models.Company | None:
        async with session_scope() as session:
            return await session.get(models.Company, self.company_id)

    async def pump(self) -> int:
        """Admit runs while there is capacity; returns how many started."""
        assert self.lock is not None
        async with self.lock:
            company = await self._company()
            if company is None or company.status in HELD_STATUSES or company.execution_stopped:
                return 0
            settings = company.settings or {}
            limit = max(1, int(settings.get("maxConcurrency") or DEFAULT_MAX_CONCURRENCY))
            # The server-wide limits.maxConcurrentTasks caps every company, older settings included.
            limit = min(limit, (await runtime_settings.current()).limits.max_concurrent_tasks)
            capacity = limit - len(self.runs)
            started = 0
            while capacity > 0:
                task_id = await self._next()
                if task_id is None:
                    break
                rate = int(settings.get("apiRateLimit") or 0)
                if rate > 0:
                    decision = await ratelimit.hit(f"company:{self.company_id}:starts", limit=rate, window_seconds=60)
                    if not decision.allowed:
                        break
                if not await self._claim(task_id):
                    continue
                self._drive(task_id)
                capacity -= 1
                started += 1
            if started:
                await self._status_event(company, "active")
            return started

    async def _next(self) -> uuid.UUID | None:
        parked_until = models.Task.run_state["parkedUntil"].astext
        async with session_scope() as session:
            due = (await session.execute(select(models.Task.id).where(
                models.Task.company_id == self.company_id, models.Task.status == "running",
                parked_until.is_not(None), parked_until <= literal_column("to_char(now() at time zone 'utc', "
                                                                           "'YYYY-MM-DD\"T\"HH24:MI:SS.US')"),
                models.Task.id.not_in(list(self.runs) or [uuid.uuid4()])).limit(1))).scalar()
            if due is not None:
                return due
            return (await session.execute(select(models.Task.id).where(
                models.Task.company_id == self.company_id, models.Task.status == "pending",
                models.Task.queued_at.is_not(None), models.Task.queued_at <= func.now(),
                or_(models.Task.scheduled_at.is_(None), models.Task.scheduled_at <= func.now()))
                .order_by(*queue_order()).limit(1))).scalar()

    async def _claim(self, task_id: uuid.UUID) -> bool:
        now = utcnow()
        async with session_scope() as session:
            task = await session.get(models.Task, task_id, with_for_update=True)
            if task is None or task.status not in ("pending", "running"):
                return False
            state = dict(task.run_state or {})
            state["parkedUntil"] = None
            task.run_state = state
            if task.status == "pending":
                task.status = "running"
                task.started_at = task.started_at or now
            task_name, created_by = task.name, task.created_by
        await records.write_log(task_id=task_id, company_id=self.company_id, level="info",
                                message=f"run admitted: {task_name}", user_id=created_by)
        return True

    async def _status_event(self, company: models.Company, status: str, message: str | None = None) -> None:
        async with session_scope() as session:
            queued = await session.scalar(select(func.count()).select_from(models.Task).where(
                models.Task.company_id == self.company_id, models.Task.status == "pending",
                models.Task.queued_at.is_not(None)))
        limit = max(1, int((company.settings or {}).get("maxConcurrency") or DEFAULT_MAX_CONCURRENCY))
        payload = {"companyId": str(self.company_id), "status": status,
                   "metrics": {"activeTasks": len(self.runs), "queueSize": int(queued or 0),
                               "resourceUsage": round(len(self.runs) / limit, 4)}}
        if message:
            payload["message"] = message
        await records.emit("company:status", [f"company:{self.company_id}"], payload,
                           company_id=str(self.company_id))

    # ------------------------------------------------------------------ API
    async def ping(self) -> dict[str, Any]:
        await self._activate()
        return {"companyId": str(self.company_id), "running": [str(t) for t in self.runs]}

    async def submit(self) -> int:
        """Ask for an admission pass; returns at once (the caller's task is queued in
        Postgres already). Returns the number of runs driven here right now."""
        await self._activate()
        self._request_pump()
        return len(self.runs)

    async def running(self) -> list[str]:
        await self._activate()
        return [str(t) for t in self.runs]

    async def pause_task(self, task_id: str) -> bool:
        """Running: pause at the next node boundary. Returns False if not driven here."""
        await self._activate()
        run = self.runs.get(uuid.UUID(task_id))
        if run is None:
            return False
        run[0].pause_requested = True
        return True

    async def cancel_task(self, task_id: str, reason: str) -> bool:
        await self._activate()
        run = self.runs.get(uuid.UUID(task_id))
        if run is None:
            return False
        control, fut = run
        control.cancel_reason = reason
        control.cancel_nodes()
        fut.cancel()
        try:
            await asyncio.wait_for(asyncio.shield(fut), timeout=5)
        except (asyncio.CancelledError, TimeoutError, Exception):
            pass
        return True

    async def set_mode(self, action: str) -> dict[str, Any]:
        """start | stop | pause | resume, already recorded on the company row by the service."""
        await self._activate()
        company = await self._company()
        if company is None:
            return {}
        if action == "stop":
            for tid in list(self.runs):
                await self.cancel_task(str(tid), "company stopped")
            await self._status_event(company, "idle", "company stopped")
        elif action == "pause":
            for control, _ in self.runs.values():
                control.pause_requested = True
            await self._status_event(company, "paused", "company paused")
        else:
            await self.pump()
            await self._status_event(company, company.status or "active", f"company {action}ed")
        return {"running": len(self.runs)}


def recovery_filter() -> Any:
    """Companies that have work a CompanyActor should be driving."""
    parked_until = models.Task.run_state["parkedUntil"].astext
    return or_(models.Task.status == "running",
               (models.Task.status == "pending") & models.Task.queued_at.is_not(None)
               & (models.Task.queued_at <= func.now()),
               parked_until.is_not(None))


async def companies_with_work() -> list[uuid.UUID]:
    async with session_scope() as session:
        return list((await session.execute(select(models.Task.company_id).where(
            recovery_filter(), models.Task.company_id.is_not(None)).distinct())).scalars())


__all__ = ["CompanyActor", "companies_with_work", "queue_order", "update"]
