"""Tasks: CRUD, control (execute/cancel/pause/resume/retry), history and the queue.

Waiting is durable: ``execute`` marks the row queued (``queued_at``) and wakes
the company's CompanyActor, which admits it when capacity allows. Control of a
running run goes through the CompanyActor that drives it; everything else is a
row update guarded by the task's status.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Integer, Select, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from troupe.actors import handles
from troupe.db import models
from troupe.engine import graph as engine_graph
from troupe.engine.validate import errors_of, validate_graph
from troupe.errors import AppError, ErrorCode, invalid, not_found
from troupe.platform.access import load_company, may, member_company_ids_subquery
from troupe.platform.deps import Principal
from troupe.platform.tasks import schemas
from troupe.timeutil import as_utc, iso, utcnow

DEFAULT_CAPACITY = 5


def to_out(task: models.Task) -> schemas.TaskOut:
    return schemas.TaskOut.model_validate({
        **{c: getattr(task, c) for c in schemas.TaskOut.model_fields if c != "metadata" and hasattr(task, c)},
        "status": task.status or "pending", "priority": task.priority or "medium", "progress": task.progress or 0,
        "tags": task.tags or [], "metadata": task.meta or {}})


def execution_out(row: models.TaskExecution) -> schemas.ExecutionOut:
    return schemas.ExecutionOut.model_validate({
        **{c: getattr(row, c) for c in schemas.ExecutionOut.model_fields if c != "metadata"},
        "status": row.status or "pending", "retry_count": row.retry_count or 0, "metadata": row.meta or {}})


def _parse_id(value: uuid.UUID | str, what: str) -> uuid.UUID:
    try:
        return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))
    except ValueError as exc:
        raise not_found(what) from exc


async def load_task(session: AsyncSession, user: Principal, task_id: uuid.UUID | str, need: str = "read",
                    *, for_update: bool = False) -> models.Task:
    task = await session.get(models.Task, _parse_id(task_id, "Task"), with_for_update=for_update)
    if task is None or task.company_id is None:
        raise not_found("Task")
    company = await session.get(models.Company, task.company_id)
    if company is None or not may(company, user, "read"):
        raise not_found("Task")
    if not may(company, user, need):  # type: ignore[arg-type]
        raise AppError(ErrorCode.INSUFFICIENT_PERMISSIONS, f"Your role in this company does not allow {need}")
    return task


async def _check_refs(session: AsyncSession, company: models.Company, *, type_: str,
                      workflow_id: uuid.UUID | None, agent_id: uuid.UUID | None, prefix: str = "") -> None:
    workflow = await session.get(models.Workflow, workflow_id) if workflow_id is not None else None
    agent = await session.get(models.Agent, agent_id) if agent_id is not None else None
    check_refs_loaded(company, type_=type_, workflow_id=workflow_id, workflow=workflow, agent_id=agent_id,
                      agent=agent, prefix=prefix)


def check_refs_loaded(company: models.Company, *, type_: str, workflow_id: uuid.UUID | None,
                      workflow: models.Workflow | None, agent_id: uuid.UUID | None, agent: models.Agent | None,
                      prefix: str = "") -> None:
    """The reference rules of a new task, on rows already loaded (a batch loads each once)."""
    if workflow_id is not None and (workflow is None or workflow.company_id != company.id):
        raise invalid("Workflow not found in this company", field=f"{prefix}workflowId")
    if agent_id is not None and (agent is None or (agent.company_id != company.id and not agent.is_public)):
        raise invalid("Agent not found in this company", field=f"{prefix}agentId")
    if type_ == "workflow" and workflow_id is None:
        raise invalid("A workflow task needs workflowId", field=f"{prefix}workflowId",
                      code=ErrorCode.REQUIRED_FIELD_MISSING)
    if type_ == "single_agent" and agent_id is None:
        raise invalid("A single_agent task needs agentId", field=f"{prefix}agentId",
                      code=ErrorCode.REQUIRED_FIELD_MISSING)
    if type_ in ("batch", "scheduled") and workflow_id is None and agent_id is None:
        raise invalid("The task needs a workflowId or an agentId", field=f"{prefix}workflowId",
                      code=ErrorCode.REQUIRED_FIELD_MISSING)


def _utc(value: datetime | None) -> datetime | None:
    return as_utc(value) if value is not None else None


def new_task(user: Principal, *, company_id: uuid.UUID, name: str, type_: str, priority: str,
             workflow_id: uuid.UUID | None, agent_id: uuid.UUID | None, input_: Any, source: str,
             description: str | None = None, assigned_to: uuid.UUID | None = None, tags: list[str] | None = None,
             scheduled_at: datetime | None = None) -> models.Task:
    """A new pending task row (not added to a session)."""
    return models.Task(name=name, description=description, type=type_, priority=priority, company_id=company_id,
                       workflow_id=workflow_id, agent_id=agent_id, input=input_, assigned_to=assigned_to,
                       tags=tags or [], created_by=user.id, status="pending", progress=0, scheduled_at=scheduled_at,
                       run_state={},
                       meta={"source": source, "triggeredBy": str(user.id), "childTasks": [], "cost": 0,
                             "resourceUsage": {"tokens": 0},
                             "performance": {"queueTime": 0, "executionTime": 0, "totalTime": 0}})


async def create(*, session: AsyncSession, user: Principal, body: schemas.TaskCreate,
                 source: str = "api") -> models.Task:
    company = await load_company(session, user, body.company_id, "execute")
    await _check_refs(session, company, type_=body.type, workflow_id=body.workflow_id, agent_id=body.agent_id)
    scheduled = _utc(body.scheduled_at)
    if body.type == "scheduled" and scheduled is None:
        raise invalid("A scheduled task needs scheduledAt", field="scheduledAt", code=ErrorCode.REQUIRED_FIELD_MISSING)
    task = new_task(user, company_id=company.id, name=body.name, description=body.description, type_=body.type,
                    priority=body.priority, workflow_id=body.workflow_id, agent_id=body.agent_id, input_=body.input,
                    assigned_to=body.assigned_to, tags=body.tags, scheduled_at=scheduled, source=source)
    if scheduled is not None:
        # A scheduled task joins the queue by itself when its time comes (the recovery sweep wakes the company).
        task.queued_at = scheduled
    session.add(task)
    await session.flush()
    return task


def _filters(stmt: Select[Any], user: Principal, **f: Any) -> Select[Any]:
    if not user.is_global:
        stmt = stmt.where(models.Task.company_id.in_(member_company_ids_subquery(user)))
    for name, column in (("status", models.Task.status), ("type", models.Task.type),
                         ("priority", models.Task.priority), ("company_id", models.Task.company_id),
                         ("assigned_to", models.Task.assigned_to), ("created_by", models.Task.created_by),
                         ("workflow_id", models.Task.workflow_id)):
        if f.get(name) is not None:
            stmt = stmt.where(column == f[name])
    if f.get("start_date") is not None:
        stmt = stmt.where(models.Task.created_at >= _utc(f["start_date"]))
    if f.get("end_date") is not None:
        stmt = stmt.where(models.Task.created_at <= _utc(f["end_date"]))
    if f.get("search"):
        stmt = stmt.where(models.Task.name.ilike(f"%{f['search']}%"))
    return stmt


SORTABLE = {"createdAt": models.Task.created_at, "priority": models.Task.priority, "status": models.Task.status,
            "name": models.Task.name, "updatedAt": models.Task.updated_at, "progress": models.Task.progress}


async def list_tasks(*, session: AsyncSession, user: Principal, page: int, limit: int, sort: str | None,
                     order: str, **filters: Any) -> tuple[list[models.Task], int]:
    base = _filters(select(models.Task), user, **filters)
    total = await session.scalar(select(func.count()).select_from(base.subquery()))
    column = SORTABLE.get(sort or "createdAt", models.Task.created_at)
    rows = (await session.execute(base.order_by(column.asc() if order == "asc" else column.desc(), models.Task.id)
                                  .offset((page - 1) * limit).limit(limit))).scalars().all()
    return list(rows), int(total or 0)


async def get(*, session: AsyncSession, user: Principal, task_id: str) -> models.Task:
    return await load_task(session, user, task_id)


async def update_task(*, session: AsyncSession, user: Principal, task_id: str, body: schemas.TaskUpdate) -> models.Task:
    task = await load_task(session, user, task_id, "execute", for_update=True)
    if task.status not in ("pending", "paused"):
        raise AppError(ErrorCode.RESOURCE_IN_USE, f"A {task.status} task cannot be updated (only pending or paused)")
    values = body.model_dump(exclude_unset=True, by_alias=False)  # the columns are snake_case
    if "scheduled_at" in values:
        values["scheduled_at"] = _utc(values["scheduled_at"])
        if task.queued_at is not None and task.type == "scheduled":
            task.queued_at = values["scheduled_at"]
    for key, value in values.items():
        setattr(task, key, value)
    await session.flush()
    return task


async def delete(*, session: AsyncSession, user: Principal, task_id: str) -> None:
    task = await load_task(session, user, task_id, "write", for_update=True)
    if task.status == "running":
        raise AppError(ErrorCode.RESOURCE_IN_USE, "A running task cannot be deleted; cancel it first")
    await session.delete(task)


async def check_company_accepts(company: models.Company) -> None:
    """Execution policy: stopped -> BIZ_002, maintenance -> BIZ_008, error -> BIZ_002."""
    if company.execution_stopped:
        raise AppError(ErrorCode.AGENT_UNAVAILABLE, "The company is stopped; start it before executing tasks")
    if company.status == "maintenance":
        raise AppError(ErrorCode.MAINTENANCE_MODE, "The company is in maintenance")
    if company.status == "error":
        raise AppError(ErrorCode.AGENT_UNAVAILABLE, "The company is in error state; start it again")


async def check_runnable(session: AsyncSession, task: models.Task) -> None:
    """BIZ_001 with every problem if the task's workflow cannot run."""
    if task.workflow_id is None:
        if task.agent_id is None:
            raise AppError(ErrorCode.WORKFLOW_INVALID, "The task has neither a workflow nor an agent")
        return
    check_workflow_runnable(await session.get(models.Workflow, task.workflow_id))


def check_workflow_runnable(workflow: models.Workflow | None) -> None:
    if workflow is None:
        raise AppError(ErrorCode.WORKFLOW_INVALID, "The task's workflow no longer exists")
    found = workflow_problems(workflow)
    if workflow.status in ("draft", "archived", "paused", "error"):
        found.insert(0, {"path": "status", "message": f"workflow is {workflow.status}; activate it to run"})
    if found:
        raise AppError(ErrorCode.WORKFLOW_INVALID, "The workflow cannot run", details={"problems": found})


def workflow_problems(workflow: models.Workflow) -> list[dict[str, Any]]:
    """The one validator's errors (troupe.engine.validate), as execute reports them."""
    return [{"path": p.node_id or p.edge_id or "", "message": p.message, "code": p.code}
            for p in errors_of(validate_graph(workflow.nodes, workflow.edges, workflow.configuration,
                                              workflow.schedule))]


def _queue_entry(task: models.Task) -> dict[str, Any]:
    return {"id": str(task.id), "priority": task.priority,
            "queuedAt": iso(task.queued_at or utcnow(), timespec="microseconds"),
            "scheduledAt": iso(task.scheduled_at, timespec="microseconds")}


async def wake(task: models.Task) -> None:
    """Hand the queued task to its company's actor without waiting for it: the row is
    committed as queued, so if the hand-over is lost the actor's own scan (or the
    recovery sweep, which activates it) still finds it."""
    await wake_many([task])


async def wake_many(tasks: list[models.Task]) -> None:
    """``wake`` for many tasks: one hand-over per company, carrying all of its tasks."""
    by_company: dict[uuid.UUID, list[dict[str, Any]]] = {}
    for task in tasks:
        if task.company_id is not None:
            by_company.setdefault(task.company_id, []).append(_queue_entry(task))
    for company_id, entries in by_company.items():
        handles.tell(handles.company_name(str(company_id)), "submit", entries)


async def execute(*, session: AsyncSession, user: Principal, task_id: str, body: schemas.TaskExecute) -> models.Task:
    task = await load_task(session, user, task_id, "execute", for_update=True)
    if task.status != "pending" or (task.queued_at is not None and task.type != "scheduled"):
        raise AppError(ErrorCode.RESOURCE_IN_USE, f"The task is {task.status}"
                       + (" and already queued" if task.status == "pending" else "; use retry or resume"))
    company = await session.get(models.Company, task.company_id)
    assert company is not None
    await check_company_accepts(company)
    await check_runnable(session, task)
    from troupe.platform.workflows.service import check_run_variables  # imports this module

    check_run_variables(await session.get(models.Workflow, task.workflow_id) if task.workflow_id else None,
                        body.variables)
    if body.priority:
        task.priority = body.priority
    task.run_state = {**(task.run_state or {}), "variables": body.variables or {}}
    task.queued_at = utcnow() if task.scheduled_at is None else task.scheduled_at
    await session.commit()
    await wake(task)
    return task


async def cancel(*, session: AsyncSession, user: Principal, task_id: str, reason: str | None) -> models.Task:
    task = await load_task(session, user, task_id, "execute", for_update=True)
    company = await session.get(models.Company, task.company_id)
    # tasks:cancel comes with ownership for the USER role: the company's owner (or admin) or the task's creator.
    if not (company is not None and may(company, user, "write")) and task.created_by != user.id:
        raise AppError(ErrorCode.INSUFFICIENT_PERMISSIONS, "Only the task's creator or the company owner may cancel it")
    if task.status in ("completed", "failed", "cancelled"):
        raise AppError(ErrorCode.RESOURCE_IN_USE, f"The task is already {task.status}")
    was_running = task.status == "running"
    reason = reason or "cancelled by user"
    task.status = "cancelled"
    task.completed_at = utcnow()
    task.error = {"code": "CANCELLED", "message": reason, "recoverable": True,
                  "retryCount": int((task.error or {}).get("retryCount", 0)) if isinstance(task.error, dict) else 0}
    task.run_state = {**(task.run_state or {}), "parkedUntil": None, "cancelReason": reason}
    session.add(models.Log(level="warn", source="engine", message=f"task cancelled: {reason}", task_id=task.id,
                           company_id=task.company_id, user_id=user.id, details={}))
    await session.commit()
    if was_running:
        await handles.call(handles.company_name(str(task.company_id)), "cancel_task", str(task.id), reason)
    from troupe.engine import records

    await records.progress_event(task, message=f"cancelled: {reason}")
    return task


async def pause(*, session: AsyncSession, user: Principal, task_id: str) -> models.Task:
    task = await load_task(session, user, task_id, "execute", for_update=True)
    if task.status == "pending":
        task.status = "paused"
        await session.commit()
        return task
    if task.status != "running":
        raise AppError(ErrorCode.RESOURCE_IN_USE, f"A {task.status} task cannot be paused")
    await session.commit()
    driven = await handles.call(handles.company_name(str(task.company_id)), "pause_task", str(task.id))
    if not driven:  # parked by a long delay: no driver holds it, pause the row directly
        await session.execute(update(models.Task).where(models.Task.id == task.id, models.Task.status == "running")
                              .values(status="paused"))
        await session.commit()
    await session.refresh(task)
    return task


async def resume(*, session: AsyncSession, user: Principal, task_id: str) -> models.Task:
    task = await load_task(session, user, task_id, "execute", for_update=True)
    if task.status != "paused":
        raise AppError(ErrorCode.RESOURCE_IN_USE, f"A {task.status} task cannot be resumed")
    company = await session.get(models.Company, task.company_id)
    assert company is not None
    await check_company_accepts(company)
    task.status = "pending"
    if task.queued_at is None or task.started_at is not None:
        task.queued_at = utcnow()
    await session.commit()
    await wake(task)
    return task


def _downstream(nodes: list[dict[str, Any]], edges: list[dict[str, Any]], start: str) -> set[str]:
    found, stack = {start}, [start]
    while stack:
        current = stack.pop()
        for edge in edges:
            if edge.get("source") == current and edge.get("target") not in found:
                found.add(edge["target"])
                stack.append(edge["target"])
    return found


async def retry(*, session: AsyncSession, user: Principal, task_id: str, body: schemas.TaskRetry) -> models.Task:
    task = await load_task(session, user, task_id, "execute", for_update=True)
    if task.status not in ("failed", "cancelled", "completed"):
        raise AppError(ErrorCode.RESOURCE_IN_USE, f"A {task.status} task cannot be retried")
    company = await session.get(models.Company, task.company_id)
    assert company is not None
    await check_company_accepts(company)
    await check_runnable(session, task)
    execs = models.TaskExecution
    rerun: set[str] | None = None  # None: keep every completed node
    if body.reset_progress:
        rerun = {row for row in (await session.execute(select(execs.node_id).where(execs.task_id == task.id)
                                                       .distinct())).scalars()}
    elif body.from_step:
        if task.workflow_id is not None:
            workflow = await session.get(models.Workflow, task.workflow_id)
            nodes, edges = list(workflow.nodes or []), list(workflow.edges or [])  # type: ignore[union-attr]
        else:
            from troupe.engine.driver import single_agent_graph

            nodes, edges, _ = single_agent_graph(task)
        if body.from_step not in {n.get("id") for n in nodes}:
            raise invalid(f"No step {body.from_step!r} in this task's workflow", field="fromStep")
        rerun = _downstream(nodes, edges, body.from_step)
        # A loop re-runs with its body.
        owners = engine_graph.body_nodes(nodes, edges)
        rerun |= {n for n, loop in owners.items() if loop in rerun}
    if rerun:
        # Superseded results stay as history but no longer count as completed (the unique index allows the rerun).
        await session.execute(update(execs).where(execs.task_id == task.id, execs.node_id.in_(rerun),
                                                  execs.status == "completed")
                              .values(status="skipped", meta=execs.meta.op("||")({"superseded": True})))
    await session.execute(update(execs).where(execs.task_id == task.id, execs.status == "failed")
                          .values(meta=execs.meta.op("||")({"final": False})))
    retry_count = (int(task.error.get("retryCount", 0)) if isinstance(task.error, dict) else 0) + 1
    task.status = "pending"
    task.error = None
    task.output = None
    task.completed_at = None
    task.started_at = None
    task.queued_at = utcnow()
    task.run_state = {**(task.run_state or {}), "parkedUntil": None, "retryCount": retry_count,
                      "retryFrom": body.from_step}
    if body.reset_progress:
        task.progress = 0
        task.current_step = None
    session.add(models.Log(level="info", source="engine", task_id=task.id, company_id=task.company_id,
                           user_id=user.id, message=f"retry #{retry_count}" + (
                               f" from {body.from_step}" if body.from_step else ""), details={}))
    await session.commit()
    await wake(task)
    return task


async def executions(*, session: AsyncSession, user: Principal, task_id: str, page: int,
                     limit: int) -> tuple[list[models.TaskExecution], int]:
    task = await load_task(session, user, task_id)
    base = select(models.TaskExecution).where(models.TaskExecution.task_id == task.id)
    total = await session.scalar(select(func.count()).select_from(base.subquery()))
    rows = (await session.execute(base.order_by(models.TaskExecution.started_at, models.TaskExecution.id)
                                  .offset((page - 1) * limit).limit(limit))).scalars().all()
    return list(rows), int(total or 0)


async def logs(*, session: AsyncSession, user: Principal, task_id: str, page: int, limit: int,
               level: str | None, start_date: datetime | None, end_date: datetime | None,
               node_id: str | None) -> tuple[list[models.Log], int]:
    task = await load_task(session, user, task_id)
    base = select(models.Log).where(models.Log.task_id == task.id)
    if level:
        base = base.where(models.Log.level == level)
    if start_date:
        base = base.where(models.Log.created_at >= _utc(start_date))
    if end_date:
        base = base.where(models.Log.created_at <= _utc(end_date))
    if node_id:
        base = base.where(models.Log.details["nodeId"].astext == node_id)
    total = await session.scalar(select(func.count()).select_from(base.subquery()))
    rows = (await session.execute(base.order_by(models.Log.created_at, models.Log.id)
                                  .offset((page - 1) * limit).limit(limit))).scalars().all()
    return list(rows), int(total or 0)


async def batch(*, session: AsyncSession, user: Principal, body: schemas.TaskBatch) -> list[models.Task]:
    """All or nothing: every item is checked before anything is written, and every failure is
    reported with its index. Each company, workflow and agent is loaded once, the rows are
    inserted in one flush, and with ``execute`` the tasks are queued in the same transaction
    and handed to each company's actor in one call. The caller commits (execute commits here,
    before the hand-over, as ``execute`` does)."""
    items = body.tasks
    companies: dict[uuid.UUID, models.Company | AppError] = {}
    for cid in dict.fromkeys(item.company_id for item in items):
        try:
            company = await load_company(session, user, cid, "execute")
            if body.execute:
                await check_company_accepts(company)
            companies[cid] = company
        except AppError as exc:
            companies[cid] = exc
    workflow_ids = {item.workflow_id for item in items if item.workflow_id is not None}
    agent_ids = {item.agent_id for item in items if item.agent_id is not None}
    workflows = {w.id: w for w in (await session.execute(
        select(models.Workflow).where(models.Workflow.id.in_(workflow_ids)))).scalars()} if workflow_ids else {}
    agents = {a.id: a for a in (await session.execute(
        select(models.Agent).where(models.Agent.id.in_(agent_ids)))).scalars()} if agent_ids else {}
    runnable: dict[uuid.UUID, AppError | None] = {}
    errors: list[dict[str, Any]] = []
    rows: list[models.Task] = []
    for index, item in enumerate(items):
        prefix = f"tasks[{index}]."
        try:
            company = companies[item.company_id]
            if isinstance(company, AppError):
                raise AppError(company.code, company.message, details=company.details,
                               field=f"{prefix}companyId")
            check_refs_loaded(company, type_=item.type, workflow_id=item.workflow_id,
                              workflow=workflows.get(item.workflow_id) if item.workflow_id else None,
                              agent_id=item.agent_id, agent=agents.get(item.agent_id) if item.agent_id else None,
                              prefix=prefix)
            if item.type == "scheduled" and item.scheduled_at is None:
                raise invalid("A scheduled task needs scheduledAt", field=f"{prefix}scheduledAt",
                              code=ErrorCode.REQUIRED_FIELD_MISSING)
            if body.execute and item.workflow_id is not None:
                if item.workflow_id not in runnable:
                    try:
                        check_workflow_runnable(workflows.get(item.workflow_id))
                        runnable[item.workflow_id] = None
                    except AppError as exc:
                        runnable[item.workflow_id] = exc
                if (problem := runnable[item.workflow_id]) is not None:
                    raise AppError(problem.code, problem.message, details=problem.details,
                                   field=f"{prefix}workflowId")
            if body.execute and body.variables:
                from troupe.platform.workflows.service import check_run_variables  # imports this module

                check_run_variables(workflows.get(item.workflow_id) if item.workflow_id else None, body.variables)
        except AppError as exc:
            errors.append({"index": index, "code": exc.code.value, "message": exc.message,
                           "field": exc.field or prefix.rstrip("."), "details": exc.details})
            continue
        if not errors:
            rows.append(new_task(user, company_id=item.company_id, name=item.name, type_=item.type,
                                 priority=item.priority, workflow_id=item.workflow_id, agent_id=item.agent_id,
                                 input_=item.input, source="batch", scheduled_at=_utc(item.scheduled_at)))
    if errors:
        first = errors[0]
        raise AppError(ErrorCode.VALIDATION_ERROR, f"{len(errors)} of {len(items)} tasks are invalid; none were "
                       f"created (first: item {first['index']}: {first['message']})", field=first["field"],
                       details={"errors": errors})
    for task in rows:
        if task.scheduled_at is not None:
            # As with POST /api/tasks: it joins the queue by itself at its time (the company's scan admits it).
            task.queued_at = task.scheduled_at
    if body.execute:
        now = utcnow()
        variables = body.variables or {}
        for task in rows:
            task.queued_at = task.scheduled_at or now
            task.run_state = {"variables": variables}
        for workflow_id in workflow_ids:
            workflow = workflows[workflow_id]
            if workflow.last_executed_at is None or (now - workflow.last_executed_at).total_seconds() >= 1:
                workflow.last_executed_at = now
    session.add_all(rows)
    await session.flush()
    if body.execute:
        await session.commit()
        await wake_many(rows)
    return rows


async def queue(*, session: AsyncSession, user: Principal, company_id: uuid.UUID | None) -> schemas.QueueStatus:
    scope = select(models.Task)
    companies = select(models.Company)
    if company_id is not None:
        await load_company(session, user, company_id)
        scope = scope.where(models.Task.company_id == company_id)
        companies = companies.where(models.Company.id == company_id)
    elif not user.is_global:
        scope = scope.where(models.Task.company_id.in_(member_company_ids_subquery(user)))
        companies = companies.where(models.Company.id.in_(member_company_ids_subquery(user)))
    sub = scope.subquery()
    parked = sub.c.run_state["parkedUntil"].astext.is_not(None)
    counts = (await session.execute(select(
        func.count().filter(sub.c.status == "pending", sub.c.queued_at.is_not(None)),
        func.count().filter(sub.c.status == "running", ~parked),
        func.count().filter(sub.c.status == "completed"),
        func.count().filter(sub.c.status == "failed"),
        func.avg(sub.c.execution_time).filter(sub.c.status == "completed")))).one()
    csub = companies.subquery()
    capacity = await session.scalar(select(func.coalesce(func.sum(func.coalesce(
        csub.c.settings["maxConcurrency"].astext.cast(Integer), DEFAULT_CAPACITY)), 0))
        .where(csub.c.execution_stopped.is_(False)))
    capacity = int(capacity or 0)
    pending, running = int(counts[0]), int(counts[1])
    average = float(counts[4] or 0)
    wait = int(average * pending / capacity) if capacity and pending else 0
    return schemas.QueueStatus(pending=pending, running=running, completed=int(counts[2]), failed=int(counts[3]),
                               total_capacity=capacity, used_capacity=min(running, capacity) if capacity else running,
                               estimated_wait_time=wait)
