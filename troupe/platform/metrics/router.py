from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query

from troupe.platform.deps import Authorized, DbSession
from troupe.platform.metrics import schemas, service
from troupe.platform.schemas import Envelope, UtcDateTime, ok
from troupe.platform.system.gates import requires_feature

router = APIRouter(prefix="/api/metrics", tags=["metrics"],
                   dependencies=[requires_feature("analytics_enabled")])


@router.get("/system", response_model=Envelope[schemas.SystemMetrics])
async def system(session: DbSession, user: Authorized("metrics:read")):
    return ok(await service.system(session=session))


@router.get("/performance", response_model=Envelope[schemas.PerformanceMetrics])
async def performance(session: DbSession, user: Authorized("metrics:read"),
                      start_date: Annotated[UtcDateTime | None, Query(alias="startDate")] = None,
                      end_date: Annotated[UtcDateTime | None, Query(alias="endDate")] = None,
                      granularity: schemas.Granularity = "hour",
                      metrics: Annotated[list[schemas.PerfMetric] | None, Query(max_length=10)] = None):
    return ok(await service.performance(session=session, start_date=start_date, end_date=end_date,
                                        granularity=granularity, metrics=metrics))


@router.get("/business", response_model=Envelope[schemas.BusinessMetrics])
async def business(session: DbSession, user: Authorized("metrics:read", "billing:read"),
                   period: schemas.BusinessPeriod = "month",
                   company_id: Annotated[uuid.UUID | None, Query(alias="companyId")] = None):
    return ok(await service.business(session=session, user=user, period=period, company_id=company_id))
