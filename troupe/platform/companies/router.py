"""Company routes. Runtime control (start/stop/pause/resume) belongs to the engine."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from troupe.platform.companies import service
from troupe.platform.companies.schemas import (
    CompanyCreate,
    CompanyDetail,
    CompanyDocument,
    CompanyImportRequest,
    CompanyListParams,
    CompanyMetricsReport,
    CompanyRead,
    CompanyUpdate,
    DuplicatedCompany,
    DuplicateRequest,
    ImportResult,
    LogParams,
    MetricsParams,
    TaskListParams,
    TaskRead,
)
from troupe.platform.deps import Authorized, DbSession
from troupe.platform.logs.schemas import LogEntry
from troupe.platform.schemas import Envelope, Message, ok

router = APIRouter(prefix="/api/companies", tags=["companies"])


@router.get("", response_model=Envelope[list[CompanyRead]])
async def list_companies(session: DbSession, user: Authorized("companies:read"),
                         params: Annotated[CompanyListParams, Query()]):
    items, pagination = await service.list_companies(session=session, user=user, params=params)
    return ok(items, pagination=pagination)


@router.post("", response_model=Envelope[CompanyDetail], status_code=201)
async def create_company(body: CompanyCreate, session: DbSession, user: Authorized("companies:create")):
    result = await service.create_company(session=session, user=user, data=body)
    await session.commit()  # durable before the client hears about it
    return ok(result)


@router.get("/{company_id}", response_model=Envelope[CompanyDetail])
async def get_company(company_id: str, session: DbSession, user: Authorized("companies:read")):
    return ok(await service.get_company(session=session, user=user, company_id=company_id))


@router.put("/{company_id}", response_model=Envelope[CompanyDetail])
async def update_company(company_id: str, body: CompanyUpdate, session: DbSession,
                         user: Authorized("companies:update")):
    result = await service.update_company(session=session, user=user, company_id=company_id, data=body)
    await session.commit()  # durable before the client hears about it
    return ok(result)


@router.delete("/{company_id}", response_model=Envelope[Message])
async def delete_company(company_id: str, session: DbSession, user: Authorized("companies:delete")):
    await service.delete_company(session=session, user=user, company_id=company_id)
    await session.commit()
    return ok(Message(message="Company deleted"))


@router.get("/{company_id}/metrics", response_model=Envelope[CompanyMetricsReport])
async def company_metrics(company_id: str, session: DbSession, user: Authorized("companies:read"),
                          params: Annotated[MetricsParams, Query()]):
    return ok(await service.metrics_report(session=session, user=user, company_id=company_id, params=params))


@router.get("/{company_id}/logs", response_model=Envelope[list[LogEntry]])
async def company_logs(company_id: str, session: DbSession, user: Authorized("companies:read"),
                       params: Annotated[LogParams, Query()]):
    items, pagination = await service.list_logs(session=session, user=user, company_id=company_id, params=params)
    return ok(items, pagination=pagination)


@router.get("/{company_id}/tasks", response_model=Envelope[list[TaskRead]])
async def company_tasks(company_id: str, session: DbSession, user: Authorized("tasks:read"),
                        params: Annotated[TaskListParams, Query()]):
    items, pagination = await service.list_tasks(session=session, user=user, company_id=company_id, params=params)
    return ok(items, pagination=pagination)


@router.post("/{company_id}/duplicate", response_model=Envelope[DuplicatedCompany], status_code=201)
async def duplicate_company(company_id: str, body: DuplicateRequest, session: DbSession,
                            user: Authorized("companies:create")):
    result = await service.duplicate_company(session=session, user=user, company_id=company_id, data=body)
    await session.commit()  # durable before the client hears about it
    return ok(result)


@router.post("/{company_id}/export", response_model=Envelope[CompanyDocument])
async def export_company(company_id: str, session: DbSession, user: Authorized("companies:read")):
    return ok(await service.export_company(session=session, user=user, company_id=company_id))


@router.post("/{company_id}/import", response_model=Envelope[ImportResult])
async def import_company(company_id: str, body: CompanyImportRequest, session: DbSession,
                         user: Authorized("companies:update")):
    result = await service.import_company(session=session, user=user, company_id=company_id, data=body)
    await session.commit()  # durable before the client hears about it
    return ok(result)
