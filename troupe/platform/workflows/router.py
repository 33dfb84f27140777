"""Workflow routes: thin wrappers over ``service``. ``/templates`` is declared
before ``/{workflow_id}`` so it is not read as an id. Execution routes
(``/execute``, ``/executions``) belong to the engine's router."""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Header, Query, Request

from troupe.platform.deps import Authorized, DbSession
from troupe.platform.schemas import Envelope, Message, Pagination, ok
from troupe.platform.tasks import schemas as task_schemas
from troupe.platform.tasks import service as tasks_service
from troupe.platform.workflows import schemas as s
from troupe.platform.workflows import service
from troupe.platform.workflows import triggers as workflow_triggers

router = APIRouter(prefix="/api/workflows", tags=["workflows"])

TagsQuery = Annotated[list[Annotated[str, Query(max_length=200)]] | None, Query(max_length=50)]
CategoryQuery = Annotated[str | None, Query(max_length=50, description="templateCategory")]


@router.get("", response_model=Envelope[list[s.WorkflowOut]])
async def list_workflows(
    session: DbSession, user: Authorized("workflows:read"), page: Annotated[s.WorkflowPage, Query()],
    company_id: Annotated[uuid.UUID | None, Query(alias="companyId")] = None,
    status: s.WorkflowStatus | None = None,
    is_template: Annotated[bool | None, Query(alias="isTemplate")] = None,
    category: CategoryQuery = None, tags: TagsQuery = None,
    created_by: Annotated[uuid.UUID | None, Query(alias="createdBy")] = None,
):
    rows, total = await service.list_workflows(session=session, user=user, page=page, company_id=company_id,
                                               status=status, is_template=is_template, category=category,
                                               tags=tags, created_by=created_by)
    return ok([service.to_out(w) for w in rows], pagination=Pagination.of(page=page.page, limit=page.limit,
                                                                          total=total))


@router.post("", response_model=Envelope[s.WorkflowOut], status_code=201)
async def create_workflow(body: s.WorkflowCreate, session: DbSession, user: Authorized("workflows:create")):
    workflow = await service.create_workflow(session=session, user=user, body=body)
    await session.commit()  # durable before the client hears about it
    return ok(service.to_out(workflow))


@router.get("/templates", response_model=Envelope[list[s.WorkflowOut]])
async def list_templates(
    session: DbSession, user: Authorized("workflows:read"), page: Annotated[s.WorkflowPage, Query()],
    category: CategoryQuery = None, industry: Annotated[str | None, Query(max_length=50)] = None,
    complexity: Literal["simple", "medium", "complex"] | None = None,
):
    rows, total = await service.list_templates(session=session, user=user, page=page, category=category,
                                               industry=industry, complexity=complexity)
    return ok([service.to_out(w) for w in rows], pagination=Pagination.of(page=page.page, limit=page.limit,
                                                                          total=total))


@router.get("/{workflow_id}", response_model=Envelope[s.WorkflowOut])
async def get_workflow(workflow_id: uuid.UUID, session: DbSession, user: Authorized("workflows:read")):
    return ok(service.to_out(await service.get_workflow(session=session, user=user, workflow_id=workflow_id)))


@router.put("/{workflow_id}", response_model=Envelope[s.WorkflowOut])
async def update_workflow(workflow_id: uuid.UUID, body: s.WorkflowUpdate, session: DbSession,
                          user: Authorized("workflows:update")):
    workflow = await service.update_workflow(session=session, user=user, workflow_id=workflow_id, body=body)
    await session.commit()  # durable before the client hears about it
    return ok(service.to_out(workflow))


@router.delete("/{workflow_id}", response_model=Envelope[Message])
async def delete_workflow(workflow_id: uuid.UUID, session: DbSession, user: Authorized("workflows:delete")):
    await service.delete_workflow(session=session, user=user, workflow_id=workflow_id)
    await session.commit()  # durable before the client hears about it
    return ok(Message(message="Workflow deleted"))


@router.post("/{workflow_id}/validate", response_model=Envelope[s.ValidationReport])
async def validate_workflow(workflow_id: uuid.UUID, session: DbSession, user: Authorized("workflows:read")):
    return ok(await service.validate_workflow(session=session, user=user, workflow_id=workflow_id))


@router.post("/{workflow_id}/export", response_model=Envelope[s.ExportDocument])
async def export_workflow(workflow_id: uuid.UUID, session: DbSession, user: Authorized("workflows:read")):
    return ok(await service.export_workflow(session=session, user=user, workflow_id=workflow_id))


@router.post("/{workflow_id}/import", response_model=Envelope[s.WorkflowOut])
async def import_workflow(workflow_id: uuid.UUID, body: s.WorkflowImportRequest, session: DbSession,
                          user: Authorized("workflows:update")):
    workflow = await service.import_workflow(session=session, user=user, workflow_id=workflow_id, body=body)
    await session.commit()  # durable before the client hears about it
    return ok(service.to_out(workflow))


@router.post("/{workflow_id}/schedule", response_model=Envelope[s.WorkflowSchedule])
async def schedule_workflow(workflow_id: uuid.UUID, body: s.ScheduleRequest, session: DbSession,
                            user: Authorized("workflows:update")):
    schedule = await service.set_schedule(session=session, user=user, workflow_id=workflow_id, body=body)
    await session.commit()  # durable before the client hears about it
    return ok(schedule)


@router.post("/{workflow_id}/triggers/{trigger_id}/webhook", response_model=Envelope[task_schemas.TaskOut],
             status_code=202, responses={401: {"description": "AUTH_001: missing, stale or wrong signature"}})
async def webhook_trigger(
    workflow_id: uuid.UUID, trigger_id: str, request: Request, session: DbSession,
    timestamp: Annotated[str | None, Header(alias=workflow_triggers.TIMESTAMP_HEADER, max_length=20)] = None,
    signature: Annotated[str | None, Header(alias=workflow_triggers.SIGNATURE_HEADER, max_length=200)] = None,
):
    """No bearer token: the HMAC signature of the body with the trigger's secret authenticates the call."""
    task = await workflow_triggers.receive_webhook(session=session, workflow_id=workflow_id, trigger_id=trigger_id,
                                                   body=await request.body(), timestamp=timestamp,
                                                   signature=signature)
    await session.commit()  # durable before the company is woken and the caller hears about it
    await tasks_service.wake(task)
    return ok(tasks_service.to_out(task))
