"""CompanyActor: one virtual actor per company (named ``company:<id>``) that owns admission.

- Status comes from ``companies.status`` (active, idle, paused, maintenance,
  error) and ``companies.execution_stopped`` (set by stop, cleared by start),
  refreshed every ``REFRESH_SECONDS`` and on every mode change.
- At most ``settings.maxConcurrency`` (default 5) runs are driven at once, and
  every run of the company is driven here, so the limit holds cluster-wide.
- ``settings.apiRateLimit`` bounds run starts per hour (a sliding hour, shared cluster-wide
  in Redis; waiting, not failing).
- Admission runs from memory: the queue is a heap ordered by priority (urgent >
  high > medium > low) with aging (every ``AGING_SECONDS`` of waiting raises a
  task one level; FIFO within a level). Postgres is the durable log: a queued
  task is a ``pending`` row with ``queued_at`` set, and activation reloads the heap
  from it. ``submit`` hands new entries over without a database round trip.
- Admitting a run claims its lease (``tasks.lease_epoch`` + 1, ``lease_expires_at``)
  in one statement for a whole batch; the actor renews the leases of the runs it
  drives every ``LEASE_RENEW_SECONDS`` and stops any driver whose lease was taken.
- Runs parked by a long delay stay ``running`` with ``run_state.parkedUntil`` and
  no lease; they are re-claimed (ahead of the queue) when due.
- On activation the actor takes over the runs that were ``running`` (its previous
  incarnation died: an actor's name is unique, so none other drives them); later it
  also adopts any run of its company whose lease expired (a driver that died alone).
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import ray
from sqlalchemy import func, or_, select, text

from troupe import runtime_settings
from troupe.actors import residency
from troupe.db import models
from troupe.db.session import session_scope, set_pool
from troupe.engine import records
from troupe.engine.driver import RunControl, RunDriver
from troupe.events.alerts import raise_alert
from troupe.infra import ratelimit
from troupe.infra.faults import is_outage
from troupe.timeutil import as_utc, parse_iso, utcnow

log = logging.getLogger("troupe.engine")
AGING_SECONDS = 30
API_RATE_WINDOW_SECONDS = 3600  # settings.apiRateLimit is per hour
DEFAULT_MAX_CONCURRENCY = 5
HELD_STATUSES = frozenset({"paused", "maintenance", "error"})
PRIORITY_RANK = {"urgent": 0, "high": 1, "medium": 2, "low": 3}
REFRESH_SECONDS = 2.0
TICK_SECONDS = 0.5


def queue_key(priority: str | None, queued_at: datetime) -> float:
    """Smaller runs first. ``rank * AGING - waited`` orders like the aging rule; the
    ``- now`` part is the same for every entry, so the key is fixed at enqueue time."""
    return PRIORITY_RANK.get(priority or "medium", 2) * AGING_SECONDS + _epoch(queued_at)


def _epoch(value: datetime) -> float:
    return as_utc(value).timestamp()


@dataclass
class Run:
    control: RunControl
    future: asyncio.Task[str]
    epoch: int


@ray.remote
class CompanyActor:
    def __init__(self, company_id: str) -> None:
        set_pool("company")
        self.company_id = uuid.UUID(company_id)
        self.runs: dict[uuid.UUID, Run] = {}
        self.heap: list[tuple[float, float, uuid.UUID]] = []  # (key, not-before epoch seconds, id)
        self.queued: set[uuid.UUID] = set()
        self.activated = False
        self.activating: asyncio.Task[None] | None = None
        self.lock: asyncio.Lock | None = None
        self.ticker: asyncio.Task[None] | None = None
        self.company: dict[str, Any] = {}
        self.refreshed = 0.0
        self.renewed = 0.0
        # Wake-ups coalesce: while one pump runs, later requests only mark it to go again,
        # so a burst of submits costs one admission pass, not one each behind the lock.
        self.pump_requested = False
        self.pump_task: asyncio.Task[None] | None = None
        self.watch = residency.IdleWatch(lambda: bool(self.runs or self.heap))

    # ------------------------------------------------------------------ activation
    async def _activate(self) -> None:
        self.watch.touch()
        if self.activated:
            return
        # Concurrent first calls share one activation (a second would take the runs over again).
        if self.activating is None or (self.activating.done() and self.activating.exception() is not None):
            self.activating = asyncio.get_running_loop().create_task(self._load_and_take_over())
        await asyncio.shield(self.activating)

    async def _load_and_take_over(self) -> None:
        self.lock = asyncio.Lock()
        await records.durable(self._refresh, what=f"company {self.company_id} load")
        await records.durable(self._load_queue, what=f"company {self.company_id} queue")
        async with session_scope() as session:
            orphans = list((await session.execute(select(models.Task.id).where(
                models.Task.company_id == self.company_id, models.Task.status == "running",
                models.Task.run_state["parkedUntil"].astext.is_(None)))).scalars())
        self.activated = True
        claimed = await records.claim_runs(self.company_id, orphans, takeover=True)
        for task_id, epoch in claimed.items():
            await records.write_log(task_id=task_id, company_id=self.company_id, level="warn",
                                    message="run resumed by a new company actor (previous driver lost)")
            self._drive(task_id, epoch)
        if claimed:
            await raise_alert(severity="medium", title="Runs resumed after a lost driver",
                              description=f"{len(claimed)} run(s) of company {self.company_id} lost their driver "
                                          "(actor or node died) and were resumed; completed nodes are not re-run.",
                              source="engine", affected=["engine", f"company:{self.company_id}"],
                              actions=["Check the Ray dashboard for dead actors or nodes"])
        self.ticker = asyncio.get_running_loop().create_task(self._tick())

    async def _refresh(self) -> None:
        async with session_scope() as session:
            company = await session.get(models.Company, self.company_id)
        if company is None:
            self.company = {"missing": True}
            return
        settings = company.settings or {}
        limit = max(1, int(settings.get("maxConcurrency") or DEFAULT_MAX_CONCURRENCY))
        # The server-wide limits.maxConcurrentTasks caps every company, older settings included.
        limit = min(limit, (await runtime_settings.current()).limits.max_concurrent_tasks)
        self.company = {"status": company.status or "active", "stopped": bool(company.execution_stopped),
                        "limit": limit, "own_limit": max(1, int(settings.get("maxConcurrency")
                                                                 or DEFAULT_MAX_CONCURRENCY)),
                        "rate": int(settings.get("apiRateLimit") or 0)}
        self.refreshed = time.monotonic()

    async def _load_queue(self) -> None:
        async with session_scope() as session:
            rows = (await session.execute(select(models.Task.id, models.Task.priority, models.Task.queued_at,
                                                 models.Task.scheduled_at).where(
                models.Task.company_id == self.company_id, models.Task.status == "pending",
                models.Task.queued_at.is_not(None)))).all()
        for task_id, priority, queued_at, scheduled_at in rows:
            self._push(task_id, priority, queued_at, scheduled_at)

    def _push(self, task_id: uuid.UUID, priority: str | None, queued_at: datetime,
              scheduled_at: datetime | None = None) -> None:
        if task_id in self.queued or task_id in self.runs:
            return
        start = max(_epoch(queued_at), _epoch(scheduled_at) if scheduled_at else 0.0)
        heapq.heappush(self.heap, (queue_key(priority, queued_at), start, task_id))
        self.queued.add(task_id)

    # ------------------------------------------------------------------ the loop
    async def _tick(self) -> None:
        while True:
            try:
                now = time.monotonic()
                if now - self.refreshed >= REFRESH_SECONDS:
                    await self._refresh()
                    await self._adopt_due()
                if now - self.renewed >= records.LEASE_RENEW_SECONDS:
                    await self._renew()
                await self.pump()
            except Exception as exc:
                if is_outage(exc):
                    log.warning("company %s tick: %s (waiting for it to come back)", self.company_id, exc)
                else:
                    log.exception("company %s tick failed", self.company_id)
            await asyncio.sleep(TICK_SECONDS)

    async def _adopt_due(self) -> None:
        """Parked runs that are due, and runs whose driver's lease expired (died alone)."""
        parked_until = models.Task.run_state["parkedUntil"].astext
        now_text = text("to_char(now() at time zone 'utc', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')")  # as iso()
        async with session_scope() as session:
            due = list((await session.execute(select(models.Task.id).where(
                models.Task.company_id == self.company_id, models.Task.status == "running",
                or_(parked_until.is_not(None) & (parked_until <= now_text), lease_lapsed()))
                .limit(100))).scalars())
            # Queued by something that did not hand it over (a schedule coming due, a lost submit).
            waiting = (await session.execute(select(
                models.Task.id, models.Task.priority, models.Task.queued_at, models.Task.scheduled_at).where(
                models.Task.company_id == self.company_id, models.Task.status == "pending",
                models.Task.queued_at.is_not(None), models.Task.queued_at <= func.now())
                .limit(1000))).all()
        for task_id, priority, queued_at, scheduled_at in waiting:
            self._push(task_id, priority, queued_at, scheduled_at)
        due = [t for t in due if t not in self.runs]
        if due:
            for task_id, epoch in (await records.claim_runs(self.company_id, due)).items():
                self._drive(task_id, epoch)

    async def _renew(self) -> None:
        leases = {task_id: run.epoch for task_id, run in self.runs.items()}
        held = await records.renew_leases(leases)
        self.renewed = time.monotonic()
        for task_id in leases.keys() - held:
            run = self.runs.get(task_id)
            if run is not None and not run.future.done():
                # Cancelled through the API, or taken over after this actor was presumed lost.
                run.control.cancel_reason = "lease lost"
                run.control.cancel_nodes()
                run.future.cancel()

    def _drive(self, task_id: uuid.UUID, epoch: int) -> None:
        control = RunControl()
        fut = asyncio.get_running_loop().create_task(RunDriver(task_id, control, epoch).run())
        self.runs[task_id] = Run(control, fut, epoch)
        fut.add_done_callback(lambda f, tid=task_id, ep=epoch: self._finished(tid, ep, f))

    def _finished(self, task_id: uuid.UUID, epoch: int, fut: asyncio.Task[str]) -> None:
        run = self.runs.get(task_id)
        if run is not None and run.epoch == epoch:
            self.runs.pop(task_id, None)
        self.watch.touch()
        if not fut.cancelled() and fut.exception() is not None:
            # The driver could not even record its failure: fail the run so it never stays running.
            exc = fut.exception()
            log.error("run %s: driver crashed: %r", task_id, exc)
            asyncio.get_running_loop().create_task(_fail_crashed(task_id, epoch, exc))
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

    def _held(self) -> bool:
        company = self.company
        return bool(company.get("missing") or company.get("status") in HELD_STATUSES or company.get("stopped"))

    async def pump(self) -> int:
        """Admit runs while there is capacity; returns how many started."""
        assert self.lock is not None
        async with self.lock:
            if self._held() or not self.heap:
                return 0
            capacity = int(self.company.get("limit", DEFAULT_MAX_CONCURRENCY)) - len(self.runs)
            rate = int(self.company.get("rate", 0))
            now = time.time()
            batch: list[uuid.UUID] = []
            later: list[tuple[float, float, uuid.UUID]] = []
            while capacity - len(batch) > 0 and self.heap:
                entry = heapq.heappop(self.heap)
                if entry[1] > now:  # scheduled for later: keep it, look further
                    later.append(entry)
                    continue
                if rate > 0:
                    decision = await ratelimit.hit(f"company:{self.company_id}:starts", limit=rate,
                                                    window_seconds=API_RATE_WINDOW_SECONDS)
                    if not decision.allowed:
                        later.append(entry)
                        break
                self.queued.discard(entry[2])
                batch.append(entry[2])
            for entry in later:
                heapq.heappush(self.heap, entry)
            if not batch:
                return 0
            try:
                claimed = await records.claim_runs(self.company_id, batch)
            except BaseException:
                for task_id in batch:  # not admitted: back in the queue, in order
                    self.queued.add(task_id)
                    heapq.heappush(self.heap, (-1.0, 0.0, task_id))
                raise
            for task_id, epoch in claimed.items():
                self._drive(task_id, epoch)
            if claimed:
                self._status_event("active")
            return len(claimed)

    def _status_event(self, status: str, message: str | None = None) -> None:
        limit = int(self.company.get("own_limit", DEFAULT_MAX_CONCURRENCY))
        payload: dict[str, Any] = {"companyId": str(self.company_id), "status": status,
                                   "metrics": {"activeTasks": len(self.runs), "queueSize": len(self.heap),
                                               "resourceUsage": round(len(self.runs) / limit, 4)}}
        if message:
            payload["message"] = message
        records.events.put([f"company:{self.company_id}"], "company:status", payload, str(self.company_id), None)

    # ------------------------------------------------------------------ API
    async def ping(self) -> dict[str, Any]:
        await self._activate()
        return {"companyId": str(self.company_id), "running": [str(t) for t in self.runs]}

    async def submit(self, entries: list[dict[str, Any]] | None = None) -> int:
        """Queue tasks the API has just made ``pending`` with ``queued_at`` (``{id, priority,
        queuedAt, scheduledAt}``) and ask for an admission pass; returns at once. Without
        entries the queue is reloaded from Postgres. Returns the runs driven here now."""
        await self._activate()
        if entries is None:
            await self._load_queue()
        for entry in entries or []:
            self._push(uuid.UUID(str(entry["id"])), entry.get("priority"),
                       parse_iso(entry["queuedAt"]),
                       parse_iso(entry["scheduledAt"]) if entry.get("scheduledAt") else None)
        self._request_pump()
        return len(self.runs)

    async def adopt_expired(self) -> int:
        """Asked by the recovery sweep: take over this company's runs whose lease expired."""
        await self._activate()
        before = len(self.runs)
        await self._adopt_due()
        return len(self.runs) - before

    async def running(self) -> list[str]:
        await self._activate()
        return [str(t) for t in self.runs]

    async def pause_task(self, task_id: str) -> bool:
        """Running: pause at the next node boundary. Returns False if not driven here."""
        await self._activate()
        run = self.runs.get(uuid.UUID(task_id))
        if run is None:
            return False
        run.control.pause_requested = True
        return True

    async def cancel_task(self, task_id: str, reason: str) -> bool:
        await self._activate()
        run = self.runs.get(uuid.UUID(task_id))
        if run is None:
            return False
        run.control.cancel_reason = reason
        run.control.cancel_nodes()
        run.future.cancel()
        try:
            await asyncio.wait_for(asyncio.shield(run.future), timeout=5)
        except (asyncio.CancelledError, TimeoutError, Exception):
            pass
        return True

    async def set_mode(self, action: str) -> dict[str, Any]:
        """start | stop | pause | resume, already recorded on the company row by the service."""
        await self._activate()
        await self._refresh()
        if self.company.get("missing"):
            return {}
        if action == "stop":
            for tid in list(self.runs):
                await self.cancel_task(str(tid), "company stopped")
            self._status_event("idle", "company stopped")
        elif action == "pause":
            for run in self.runs.values():
                run.control.pause_requested = True
            self._status_event("paused", "company paused")
        else:
            await self._load_queue()
            await self.pump()
            self._status_event(str(self.company.get("status") or "active"), f"company {action}ed")
        return {"running": len(self.runs)}


async def _fail_crashed(task_id: uuid.UUID, epoch: int, exc: BaseException) -> None:
    try:
        await records.fenced_task_update(
            task_id, epoch, status="failed", completed_at=utcnow(), lease_expires_at=None,
            error={"code": "SYS_001", "message": f"run driver crashed: {type(exc).__name__}: {exc}",
                   "recoverable": True, "retryCount": 0})
    except Exception:
        log.exception("run %s: could not record the driver's crash", task_id)


def recovery_filter() -> Any:
    """Companies that have work a CompanyActor should be driving."""
    parked_until = models.Task.run_state["parkedUntil"].astext
    return or_(models.Task.status == "running",
               (models.Task.status == "pending") & models.Task.queued_at.is_not(None)
               & (models.Task.queued_at <= func.now()),
               parked_until.is_not(None))


def lease_lapsed() -> Any:
    """A run (not parked) whose driver stopped renewing its lease."""
    return (models.Task.run_state["parkedUntil"].astext.is_(None)
            & (models.Task.lease_expires_at < func.now()))


async def companies_with_expired_leases() -> set[uuid.UUID]:
    """Companies with a run that is ``running`` (not parked) under a lease nobody renewed."""
    async with session_scope() as session:
        return set((await session.execute(select(models.Task.company_id).where(
            models.Task.status == "running", lease_lapsed(), models.Task.company_id.is_not(None))
            .distinct())).scalars())


async def companies_with_work() -> list[uuid.UUID]:
    async with session_scope() as session:
        return list((await session.execute(select(models.Task.company_id).where(
            recovery_filter(), models.Task.company_id.is_not(None)).distinct())).scalars())


__all__ = ["CompanyActor", "companies_with_expired_leases", "companies_with_work", "queue_key"]
