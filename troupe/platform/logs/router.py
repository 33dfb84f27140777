from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query

from troupe.platform.deps import Authorized, DbSession
from troupe.platform.logs import schemas, service
from troupe.platform.schemas import Envelope, PageLimit, Pagination, UtcDateTime, ok

router = APIRouter(prefix="/api/logs", tags=["logs"])


@router.get("", response_model=Envelope[schemas.LogPage])
async def list_logs(session: DbSession, user: Authorized("logs:read"),
                    level: schemas.LogLevel | None = None,
                    source: Annotated[str | None, Query(max_length=100)] = None,
                    search: Annotated[str | None, Query(max_length=200)] = None,
                    start_date: Annotated[UtcDateTime | None, Query(alias="startDate")] = None,
                    end_date: Annotated[UtcDateTime | None, Query(alias="endDate")] = None,
                    user_id: Annotated[uuid.UUID | None, Query(alias="userId")] = None,
                    company_id: Annotated[uuid.UUID | None, Query(alias="companyId")] = None,
                    task_id: Annotated[uuid.UUID | None, Query(alias="taskId")] = None,
                    request_id: Annotated[str | None, Query(alias="requestId", max_length=255)] = None,
                    page: Annotated[int, Query(ge=1, le=100_000)] = 1,
                    limit: Annotated[PageLimit, Query()] = 50):
    data, total = await service.search(session=session, page=page, limit=limit, level=level, source=source,
                                       company_id=company_id, user_id=user_id, task_id=task_id,
                                       request_id=request_id, start_date=start_date, end_date=end_date,
                                       search=search)
    return ok(data, pagination=Pagination.of(page=page, limit=limit, total=total))
