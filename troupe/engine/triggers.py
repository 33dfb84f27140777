"""Runs that nobody executes by hand: cron schedules, webhook calls and event triggers.

The one owner of "start a triggered run": a new ``workflow`` task, queued at once
(``queued_at``), with ``metadata.source`` telling where it came from. The caller
hands it to the company's actor; if that hand-over is lost, the actor's own scan
of queued rows (and the recovery sweep) still admits it.

Schedules. ``workflows.schedule`` holds ``{enabled, cron, timezone, variables,
nextRun, lastRun}`` (times in UTC). A slot is claimed with ONE conditional update
(``... WHERE schedule->>'nextRun' = <the slot read>``) in the same transaction
that inserts its run, so two schedulers (or a scheduler restarted mid-way)
cannot both fire it: the second update finds ``nextRun`` moved and writes
nothing. A unique index on ``tasks (workflow_id, scheduled_at)`` for runs whose
source is ``schedule`` backs this up. Missed slots (the scheduler was down, or
the cron ticks faster than the scheduler): the most recent due slot fires ONCE,
older ones are skipped (logged with their count), and ``nextRun`` becomes the
first slot after now. Only ``active`` workflows of companies that accept work
fire; a slot that comes due while the company is stopped, in maintenance or in
error, or while the workflow no longer validates, is consumed without a run and
logged.

Event triggers start a workflow when another workflow of the same company
finishes (see ``on_run_finished``).
"""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from troupe.db import models
from troupe.db.session import session_scope
from troupe.engine.validate import cron_problem, errors_of, timezone_problem, validate_graph
from troupe.timeutil import as_utc, iso, parse_iso, utcnow

log = logging.getLogger("troupe.engine")

SCHEDULE_BATCH = 200
# Counting skipped slots of a fast cron over a long outage is bounded; past this it says "at least".
SKIP_COUNT_LIMIT = 10_000
# A chain of event triggers (A starts B starts A ...) stops at this depth.
MAX_EVENT_DEPTH = 10
EVENT_ON = ("completed", "failed", "finished")
HELD_COMPANY_STATUSES = ("paused", "maintenance", "error")


# --------------------------------------------------------------------------- cron slots


def _croniter(cron: str, start: datetime, timezone: str) -> Any:
    from croniter import croniter

    return croniter(cron, as_utc(start).astimezone(ZoneInfo(timezone)))


def _utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


def next_slot(cron: str, timezone: str, after: datetime) -> datetime:
    """The first slot strictly after ``after`` (aware UTC out). Five-field
    cron is minute-level; a sixth field, last (croniter's order), gives seconds
    (``* * * * * */5``: every 5 seconds)."""
    return _utc(_croniter(cron, after, timezone).get_next(datetime))


def latest_slot(cron: str, timezone: str, at: datetime) -> datetime:
    """The last slot at or before ``at``."""
    # croniter's get_prev is strictly before its start: look back from just after ``at``.
    return _utc(_croniter(cron, at + timedelta(microseconds=1), timezone).get_prev(datetime))


def _skipped(cron: str, timezone: str, first: datetime, latest: datetime) -> int:
    """Slots from ``first`` (included) up to ``latest`` (excluded)."""
    count, slot = 0, first
    it = _croniter(cron, first, timezone)
    while slot < latest and count < SKIP_COUNT_LIMIT:
        count += 1
        slot = _utc(it.get_next(datetime))
    return count


def schedule_valid(schedule: dict[str, Any] | None) -> bool:
    return bool(schedule) and cron_problem(schedule.get("cron")) is None \
        and timezone_problem(schedule.get("timezone") or "UTC") is None  # type: ignore[union-attr]


# --------------------------------------------------------------------------- runs


def new_run(workflow: models.Workflow, *, source: str, name: str, input_: Any, triggered_by: str,
            variables: dict[str, Any] | None = None, scheduled_at: datetime | None = None,
            parent_task_id: uuid.UUID | None = None, depth: int = 0, now: datetime | None = None) -> models.Task:
    """A queued ``workflow`` task of ``workflow`` (not yet added to a session). It runs as the
    workflow's creator (``createdBy``), the user whose permissions set up the trigger."""
    now = now or utcnow()
    meta: dict[str, Any] = {"source": source, "triggeredBy": triggered_by, "childTasks": [], "cost": 0,
                            "resourceUsage": {"tokens": 0},
                            "performance": {"queueTime": 0, "executionTime": 0, "totalTime": 0}}
    if parent_task_id is not None:
        meta["parentTaskId"] = str(parent_task_id)
    if depth:
        meta["triggerDepth"] = depth
    return models.Task(name=name, type="workflow", priority="medium", company_id=workflow.company_id,
                       workflow_id=workflow.id, input=input_, tags=[], created_by=workflow.created_by,
                       status="pending", progress=0, scheduled_at=scheduled_at, queued_at=now,
                       run_state={"variables": dict(variables or {})}, meta=meta)


def queue_entry(task: models.Task) -> dict[str, Any]:
    """What the company actor's ``submit`` takes."""
    return {"id": str(task.id), "priority": task.priority or "medium",
            "queuedAt": iso(task.queued_at or utcnow(), timespec="microseconds"),
            "scheduledAt": iso(task.scheduled_at, timespec="microseconds")}


def refusal(company: models.Company | None, workflow: models.Workflow) -> str | None:
    """Why a triggered run of ``workflow`` cannot start now, or None."""
    if company is None:
        return "the company no longer exists"
    if company.execution_stopped:
        return "the company is stopped"
    if company.status in HELD_COMPANY_STATUSES:
        return f"the company is {company.status}"
    if workflow.status != "active":
        return f"the workflow is {workflow.status}"
    problems = errors_of(validate_graph(workflow.nodes, workflow.edges, workflow.configuration))
    if problems:
        return f"the workflow is not valid: {problems[0].message}"
    return None


def _log(session: AsyncSession, workflow: models.Workflow, level: str, message: str, **details: Any) -> None:
    session.add(models.Log(level=level, source="scheduler", message=message, company_id=workflow.company_id,
                           details={"workflowId": str(workflow.id), **details}))


# --------------------------------------------------------------------------- schedules


async def fire_due_schedules(*, now: datetime | None = None) -> list[models.Task]:
    """Fire every schedule whose ``nextRun`` has come (``now`` is injectable for tests).
    Returns the runs created (committed, queued); the caller wakes their companies."""
    now = now or utcnow()
    # nextRun is always written by ``iso`` (fixed width, UTC, "Z"), so text order is time order, and the
    # partial index idx_workflows_due answers this scan every second without reading other workflows.
    next_run = models.Workflow.schedule["nextRun"].astext
    async with session_scope() as session:
        due = (await session.execute(select(models.Workflow.id).where(
            models.Workflow.status == "active", next_run.is_not(None), next_run <= iso(now),
            models.Workflow.schedule["enabled"].as_boolean().is_(True))
            .order_by(next_run).limit(SCHEDULE_BATCH))).scalars().all()
    fired: list[models.Task] = []
    for workflow_id in due:
        try:
            task = await _fire_one(workflow_id, now)
        except Exception:
            log.exception("schedule of workflow %s could not fire", workflow_id)
            continue
        if task is not None:
            fired.append(task)
    return fired


async def _fire_one(workflow_id: uuid.UUID, now: datetime) -> models.Task | None:
    async with session_scope() as session:
        workflow = await session.get(models.Workflow, workflow_id)
        schedule = dict(workflow.schedule or {}) if workflow is not None else {}
        if workflow is None or not schedule.get("enabled") or not schedule.get("nextRun"):
            return None  # changed since the scan
        stored_next = schedule["nextRun"]
        cron, timezone = schedule.get("cron") or "", schedule.get("timezone") or "UTC"
        if not schedule_valid(schedule):
            # A draft may hold an invalid schedule; an active one cannot (validation), but never loop on it.
            await session.execute(update(models.Workflow).where(models.Workflow.id == workflow_id).values(
                schedule=models.Workflow.schedule.op("||")({"nextRun": None})))
            return None
        first_due = parse_iso(stored_next)
        if first_due > now:  # another scheduler fired it since the scan: this is the next slot, not yet due
            return None
        # nextRun may not be a slot of the cron (edited by hand): it is due, so it fires at the latest at itself.
        slot = max(latest_slot(cron, timezone, now), first_due)
        following = next_slot(cron, timezone, max(now, slot))
        # The claim: only the scheduler that still sees this nextRun (and this cron) moves it.
        claimed = (await session.execute(
            update(models.Workflow).where(
                models.Workflow.id == workflow_id, models.Workflow.status == "active",
                models.Workflow.schedule["nextRun"].astext == stored_next,
                models.Workflow.schedule["cron"].astext == cron)
            .values(schedule=models.Workflow.schedule.op("||")({"nextRun": iso(following), "lastRun": iso(slot)}),
                    last_executed_at=utcnow())
            .returning(models.Workflow.id))).scalar_one_or_none()
        if claimed is None:
            return None
        skipped = _skipped(cron, timezone, first_due, slot)
        if skipped:
            _log(session, workflow, "warn", f"schedule: {skipped}{'+' if skipped >= SKIP_COUNT_LIMIT else ''} "
                 f"missed slot(s) before {iso(slot)} skipped; the latest fires once", skipped=skipped)
        company = await session.get(models.Company, workflow.company_id) if workflow.company_id else None
        await session.refresh(workflow)
        reason = refusal(company, workflow)
        if reason is not None:
            _log(session, workflow, "warn", f"schedule: slot {iso(slot)} not run: {reason}", slot=iso(slot))
            return None
        task = new_run(workflow, source="schedule", name=f"{workflow.name[:200]} @ {iso(slot)}",
                       input_={}, triggered_by="schedule",
                       variables=schedule.get("variables"), scheduled_at=slot)
        try:
            async with session.begin_nested():
                session.add(task)
                await session.flush()
        except IntegrityError:
            # The slot's run already exists (the unique index): it fired before; keep the slot consumed.
            return None
        return task


# --------------------------------------------------------------------------- event triggers


def _event_matches(trigger: dict[str, Any], workflow_id: uuid.UUID, status: str) -> bool:
    if trigger.get("type") != "event" or not trigger.get("enabled", True):
        return False
    config = trigger.get("configuration") or {}
    if str(config.get("workflowId")) != str(workflow_id):
        return False
    on = config.get("on") or "completed"
    return on == status or (on == "finished" and status in ("completed", "failed"))


async def on_run_finished(task: models.Task) -> list[models.Task]:
    """A workflow run ended (completed or failed): start every active workflow of the same
    company whose enabled ``event`` trigger names it (``configuration.workflowId``, ``on``
    completed | failed | finished, default completed). The new run's input is the finished
    run's output (its error when it failed); ``metadata.parentTaskId`` names the finished run.
    Called off the run's path (in the background after the run is recorded); at most once
    per finished run and trigger (a unique index on the parent and workflow)."""
    if task.workflow_id is None or task.company_id is None or task.status not in ("completed", "failed"):
        return []
    depth = int((task.meta or {}).get("triggerDepth") or 0) + 1
    if depth > MAX_EVENT_DEPTH:
        log.warning("event triggers: run %s is %d triggers deep; not starting more", task.id, depth - 1)
        return []
    pattern = [{"type": "event", "configuration": {"workflowId": str(task.workflow_id)}}]
    started: list[models.Task] = []
    async with session_scope() as session:
        targets = (await session.execute(select(models.Workflow).where(
            models.Workflow.company_id == task.company_id, models.Workflow.status == "active",
            models.Workflow.triggers.contains(pattern)))).scalars().all()
        if not targets:
            return []
        company = await session.get(models.Company, task.company_id)
        for workflow in targets:
            matching = [t for t in workflow.triggers or [] if _event_matches(t, task.workflow_id, task.status)]
            if not matching or workflow.id == task.workflow_id:
                continue
            reason = refusal(company, workflow)
            if reason is not None:
                _log(session, workflow, "warn", f"event trigger {matching[0].get('id')}: run {task.id} "
                     f"{task.status}, but no run started: {reason}")
                continue
            run = new_run(workflow, source="api", name=f"{workflow.name[:120]} after {task.name[:120]}",
                          input_=task.output if task.status == "completed" else {"error": task.error},
                          triggered_by=f"event:{matching[0].get('id')}", parent_task_id=task.id, depth=depth)
            try:
                async with session.begin_nested():
                    session.add(run)
                    await session.flush()
            except IntegrityError:
                continue  # already started for this run
            started.append(run)
    return started
