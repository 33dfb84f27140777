from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response

from troupe.errors import forbidden
from troupe.platform.deps import Authorized, DbSession
from troupe.platform.logs import service as logs_service
from troupe.platform.logs.schemas import LogEntry
from troupe.platform.schemas import Envelope, Message, PageParams, Pagination, UtcDateTime, ok
from troupe.platform.tasks import schemas, service
from troupe.platform.tasks.schemas import Priority, TaskStatus, TaskType

router = APIRouter(prefix="/api/tasks", tags=["tasks"])
Page = Annotated[PageParams, Depends()]


# Literal paths first: /queue and /batch must not be read as a task id.
@router.get("/queue", response_model=Envelope[schemas.QueueStatus])
async def queue(session: DbSession, user: Authorized("tasks:read"),
                company_id: Annotated[uuid.UUID | None, Query(alias="companyId")] = None):
    return ok(await service.queue(session=session, user=user, company_id=company_id))


@router.post("/batch", response_model=Envelope[schemas.TaskBatchResult], status_code=201,
             responses={202: {"description": "Created and started (execute: true)"}})
async def batch(body: schemas.TaskBatch, session: DbSession, user: Authorized("tasks:create"), response: Response):
    if body.execute and not user.can("tasks:execute"):
        raise forbidden("Missing permission: tasks:execute")
    tasks = await service.batch(session=session, user=user, body=body)
    await session.commit()  # visible to the next request before the response is sent
    if body.execute:
        response.status_code = 202
    # tasks[i] is input item i.
    return ok(schemas.TaskBatchResult(created=len(tasks), tasks=[service.to_out(t) for t in tasks]))


@router.get("", response_model=Envelope[list[schemas.TaskOut]])
async def list_tasks(session: DbSession, user: Authorized("tasks:read"), page: Page,
                     status: TaskStatus | None = None, type: TaskType | None = None,
                     priority: Priority | None = None,
                     company_id: Annotated[uuid.UUID | None, Query(alias="companyId")] = None,
                     assigned_to: Annotated[uuid.UUID | None, Query(alias="assignedTo")] = None,
                     created_by: Annotated[uuid.UUID | None, Query(alias="createdBy")] = None,
                     workflow_id: Annotated[uuid.UUID | None, Query(alias="workflowId")] = None,
                     start_date: Annotated[UtcDateTime | None, Query(alias="startDate")] = None,
                     end_date: Annotated[UtcDateTime | None, Query(alias="endDate")] = None):
    rows, total = await service.list_tasks(
        session=session, user=user, page=page.page, limit=page.limit, sort=page.sort, order=page.order,
        search=page.search, status=status, type=type, priority=priority, company_id=company_id,
        assigned_to=assigned_to, created_by=created_by, workflow_id=workflow_id, start_date=start_date,
        end_date=end_date)
    return ok([service.to_out(t) for t in rows], pagination=Pagination.of(page=page.page, limit=page.limit,
                                                                          total=total))


@router.post("", response_model=Envelope[schemas.TaskOut], status_code=201)
async def create(body: schemas.TaskCreate, session: DbSession, user: Authorized("tasks:create")):
    task = await service.create(session=session, user=user, body=body)
    await session.commit()  # visible to the next request before the response is sent
    return ok(service.to_out(task))


@router.get("/{task_id}", response_model=Envelope[schemas.TaskOut])
async def get(task_id: str, session: DbSession, user: Authorized("tasks:read")):
    return ok(service.to_out(await service.get(session=session, user=user, task_id=task_id)))


@router.put("/{task_id}", response_model=Envelope[schemas.TaskOut])
async def update(task_id: str, body: schemas.TaskUpdate, session: DbSession, user: Authorized("tasks:update")):
    return ok(service.to_out(await service.update_task(session=session, user=user, task_id=task_id, body=body)))


@router.delete("/{task_id}", response_model=Envelope[Message])
async def delete(task_id: str, session: DbSession, user: Authorized("tasks:delete")):
    await service.delete(session=session, user=user, task_id=task_id)
    return ok(Message(message="Task deleted"))


@router.post("/{task_id}/execute", response_model=Envelope[schemas.TaskOut], status_code=202)
async def execute(task_id: str, session: DbSession, user: Authorized("tasks:execute"),
                  body: schemas.TaskExecute | None = None):
    task = await service.execute(session=session, user=user, task_id=task_id, body=body or schemas.TaskExecute())
    return ok(service.to_out(task))


@router.post("/{task_id}/cancel", response_model=Envelope[schemas.TaskOut])
async def cancel(task_id: str, session: DbSession, user: Authorized("tasks:cancel"),
                 body: schemas.TaskCancel | None = None):
    task = await service.cancel(session=session, user=user, task_id=task_id, reason=(body or schemas.TaskCancel()).reason)
    return ok(service.to_out(task))


@router.post("/{task_id}/pause", response_model=Envelope[schemas.TaskOut])
async def pause(task_id: str, session: DbSession, user: Authorized("tasks:execute")):
    return ok(service.to_out(await service.pause(session=session, user=user, task_id=task_id)))


@router.post("/{task_id}/resume", response_model=Envelope[schemas.TaskOut])
async def resume(task_id: str, session: DbSession, user: Authorized("tasks:execute")):
    return ok(service.to_out(await service.resume(session=session, user=user, task_id=task_id)))


@router.post("/{task_id}/retry", response_model=Envelope[schemas.TaskOut], status_code=202)
async def retry(task_id: str, session: DbSession, user: Authorized("tasks:execute"),
                body: schemas.TaskRetry | None = None):
    task = await service.retry(session=session, user=user, task_id=task_id, body=body or schemas.TaskRetry())
    return ok(service.to_out(task))


@router.get("/{task_id}/executions", response_model=Envelope[list[schemas.ExecutionOut]])
async def executions(task_id: str, session: DbSession, user: Authorized("tasks:read"), page: Page):
    rows, total = await service.executions(session=session, user=user, task_id=task_id, page=page.page,
                                           limit=page.limit)
    return ok([service.execution_out(r) for r in rows],
              pagination=Pagination.of(page=page.page, limit=page.limit, total=total))


@router.get("/{task_id}/logs", response_model=Envelope[list[LogEntry]])
async def logs(task_id: str, session: DbSession, user: Authorized("tasks:read"), page: Page,
               level: Annotated[str | None, Query(pattern="^(debug|info|warn|error|fatal)$")] = None,
               start_date: Annotated[UtcDateTime | None, Query(alias="startDate")] = None,
               end_date: Annotated[UtcDateTime | None, Query(alias="endDate")] = None,
               node_id: Annotated[str | None, Query(alias="nodeId", max_length=255)] = None):
    rows, total = await service.logs(session=session, user=user, task_id=task_id, page=page.page,
                                     limit=page.limit, level=level, start_date=start_date, end_date=end_date,
                                     node_id=node_id)
    return ok([logs_service.log_entry(r) for r in rows],
              pagination=Pagination.of(page=page.page, limit=page.limit, total=total))
