from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query

from troupe.platform.dashboard import schemas, service
from troupe.platform.deps import CurrentUser, DbSession
from troupe.platform.schemas import Envelope, PageLimit, ok
from troupe.platform.system.gates import requires_feature

router = APIRouter(prefix="/api/dashboard", tags=["dashboard"],
                   dependencies=[requires_feature("analytics_enabled")])


# Any authenticated user: figures cover their own companies; metrics:read widens them to all.
@router.get("/stats", response_model=Envelope[schemas.DashboardStats])
async def stats(session: DbSession, user: CurrentUser, period: schemas.StatsPeriod = "week",
                company_id: Annotated[uuid.UUID | None, Query(alias="companyId")] = None):
    return ok(await service.stats(session=session, user=user, period=period, company_id=company_id))


@router.get("/performance", response_model=Envelope[schemas.DashboardPerformance])
async def performance(session: DbSession, user: CurrentUser, period: schemas.PerfPeriod = "day",
                      metrics: Annotated[list[schemas.PerfTrend] | None, Query(max_length=4)] = None,
                      company_id: Annotated[uuid.UUID | None, Query(alias="companyId")] = None):
    return ok(await service.performance(session=session, user=user, period=period, metrics=metrics,
                                        company_id=company_id))


@router.get("/alerts", response_model=Envelope[schemas.DashboardAlerts])
async def alerts(session: DbSession, user: CurrentUser, severity: schemas.Severity | None = None,
                 status: schemas.AlertStatus | None = None, limit: Annotated[PageLimit, Query()] = 20):
    return ok(await service.alerts(session=session, user=user, severity=severity, status=status, limit=limit))
