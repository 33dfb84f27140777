"""Durable records of runs: execution rows, log rows, task updates and events.

Called by the run driver (inside the CompanyActor's event loop)."""

from __future__ import annotations

import logging
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError

from troupe.db import models
from troupe.db.session import session_scope
from troupe.events import publish
from troupe.events.notifications import deliver
from troupe.timeutil import iso, utcnow

log = logging.getLogger("troupe.engine")


def _log_row(*, task_id: uuid.UUID, company_id: uuid.UUID | None, level: str, message: str,
             node_id: str | None = None, details: dict[str, Any] | None = None, duration: int | None = None,
             user_id: uuid.UUID | None = None) -> models.Log:
    return models.Log(level=level, source="engine", message=message, task_id=task_id, company_id=company_id,
                      user_id=user_id, duration=duration,
                      details={**(details or {}), **({"nodeId": node_id} if node_id else {})})


async def start_execution(*, task_id: uuid.UUID, node_id: str, iteration: int, attempt: int, input_: Any,
                          agent_id: str | None = None, tool_id: str | None = None,
                          idempotency_key: str | None = None, meta: dict[str, Any] | None = None,
                          log: dict[str, Any] | None = None, current_step: str | None = None) -> uuid.UUID:
    """The attempt's row, and in the same transaction (one round trip on the hot
    path) its "started" log line and the task's current step."""
    async with session_scope() as session:
        row = models.TaskExecution(task_id=task_id, node_id=node_id, iteration=iteration, attempt=attempt,
                                   retry_count=attempt, status="running", input=input_, started_at=utcnow(),
                                   agent_id=uuid.UUID(agent_id) if agent_id else None,
                                   tool_id=uuid.UUID(tool_id) if tool_id else None,
                                   idempotency_key=idempotency_key, meta=meta or {})
        session.add(row)
        if log is not None:
            session.add(_log_row(task_id=task_id, node_id=node_id, **log))
        if current_step is not None:
            await session.execute(update(models.Task).where(models.Task.id == task_id)
                                  .values(current_step=current_step))
        await session.flush()
        return row.id


async def finish_execution(execution_id: uuid.UUID, *, status: str, output: Any = None, error: str | None = None,
                           meta: dict[str, Any] | None = None, started: datetime | None = None,
                           log: dict[str, Any] | None = None) -> bool:
    """False if a completed row for the same node/iteration already existed (never recorded twice).
    ``log`` (write_log's keywords) is written in the same transaction."""
    now = utcnow()
    values: dict[str, Any] = {"status": status, "output": output, "error": error, "completed_at": now}
    if meta is not None:
        values["meta"] = meta
    if started is not None:
        values["execution_time"] = int((now - started).total_seconds() * 1000)
    try:
        async with session_scope() as session:
            await session.execute(update(models.TaskExecution)
                                  .where(models.TaskExecution.id == execution_id).values(**values))
            if log is not None:
                session.add(_log_row(**log))
        return True
    except IntegrityError:
        async with session_scope() as session:
            await session.execute(update(models.TaskExecution).where(models.TaskExecution.id == execution_id)
                                  .values(status="skipped", error="duplicate of an earlier completed execution",
                                          completed_at=now))
        return False


async def write_log(*, task_id: uuid.UUID, company_id: uuid.UUID | None, level: str, message: str,
                    node_id: str | None = None, details: dict[str, Any] | None = None,
                    duration: int | None = None, user_id: uuid.UUID | None = None) -> None:
    async with session_scope() as session:
        session.add(_log_row(task_id=task_id, company_id=company_id, level=level, message=message,
                             node_id=node_id, details=details, duration=duration, user_id=user_id))


async def update_task(task_id: uuid.UUID, **values: Any) -> None:
    async with session_scope() as session:
        await session.execute(update(models.Task).where(models.Task.id == task_id).values(**values))


async def usage(task_id: uuid.UUID, session: Any = None) -> tuple[int, float]:
    """Tokens and cost of the task's completed executions, summed in SQL (in the
    caller's session when given, to save a round trip)."""
    tokens = func.coalesce(func.sum(models.TaskExecution.meta["tokensUsed"].as_float()), 0)
    cost = func.coalesce(func.sum(models.TaskExecution.meta["cost"].as_float()), 0)
    query = select(tokens, cost).where(models.TaskExecution.task_id == task_id,
                                       models.TaskExecution.status == "completed")
    if session is None:
        async with session_scope() as own:
            row = (await own.execute(query)).one()
    else:
        row = (await session.execute(query)).one()
    return int(row[0] or 0), float(row[1] or 0)


async def emit(type_: str, rooms: list[str], payload: dict[str, Any], *, company_id: str | None = None,
               user_id: str | None = None) -> None:
    try:
        await publish(rooms, type_, payload, company_id=company_id, user_id=user_id)
    except Exception:  # an event that cannot be published must not fail the run
        log.exception("could not publish %s", type_)


async def progress_event(task: models.Task, *, message: str | None = None, tokens: int | None = None,
                         cost: float | None = None) -> None:
    payload: dict[str, Any] = {"taskId": str(task.id), "progress": task.progress or 0, "status": task.status,
                               "currentStep": task.current_step, "totalSteps": task.total_steps}
    if message:
        payload["message"] = message
    if task.estimated_completion:
        payload["estimatedCompletion"] = iso(task.estimated_completion)
    if tokens is not None:
        payload["metadata"] = {"tokensUsed": tokens, "cost": cost or 0}
    company = str(task.company_id) if task.company_id else None
    rooms = [f"task:{task.id}"] + ([f"company:{company}"] if company else [])
    await emit("task:progress", rooms, payload, company_id=company)


async def notify(user_id: uuid.UUID | None, *, level: str, title: str, message: str, data: dict[str, Any]) -> None:
    """Tell the task's creator: a stored notification sent by their channels
    (``user:notification``), and the spec's toast event (``notification``)."""
    if user_id is None:
        return
    try:
        async with session_scope() as session:
            delivered = await deliver(session, user_id=user_id, type_="completion" if level == "success" else "error",
                                      title=title, message=message, data=data, category="task",
                                      priority="high" if level == "error" else "medium")
    except Exception:  # the run is finished either way; a lost notice must not fail it
        log.exception("could not notify %s", user_id)
        return
    await emit("notification", [f"user:{user_id}"], {"id": str(delivered.row.id), "level": level, "title": title,
                                                     "message": message, "category": "task"},
               user_id=str(user_id))
