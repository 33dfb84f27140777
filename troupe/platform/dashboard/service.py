"""Dashboard figures, each computed in SQL from real rows and scoped to the
caller's companies (every company with metrics:read).

Alerts are derived, not stored: failed tasks, companies and agents in error,
error log rows in the last 7 days, and (metrics:read only) host disk/memory
above 90 %. Nothing is acknowledged or resolved by hand, so every alert is
``active`` and it disappears when its cause does."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import timedelta

import psutil
from sqlalchemy import Float, String, and_, cast, func, literal, select, true, union_all
from sqlalchemy.ext.asyncio import AsyncSession

from troupe.config import get_settings
from troupe.db import models
from troupe.platform.access import load_company, visible_companies
from troupe.platform.dashboard import schemas
from troupe.platform.deps import Principal
from troupe.platform.schemas import percent
from troupe.timeutil import utcnow

T, E, A, Co, Tl, TC, CT, L, R = (models.Task, models.TaskExecution, models.Agent, models.Company, models.Tool,
                                 models.ToolCall, models.CompanyTool, models.Log, models.AgentReview)
_STARTED = time.time()
STATS_WINDOW = {"today": (timedelta(days=1), "hour"), "week": (timedelta(days=7), "day"),
                "month": (timedelta(days=30), "day"), "year": (timedelta(days=365), "month")}
PERF_WINDOW = {"hour": (timedelta(hours=1), "minute"), "day": (timedelta(days=1), "hour"),
               "week": (timedelta(days=7), "day"), "month": (timedelta(days=30), "day")}
_ALERT_WINDOW = timedelta(days=7)


async def _company_ids(session: AsyncSession, user: Principal, company_id: uuid.UUID | None):
    """Subquery of the company ids the figures cover."""
    if company_id is not None:
        await load_company(session, user, company_id, "read")
        return select(Co.id).where(Co.id == company_id).scalar_subquery()
    scope = true() if user.can("metrics:read") else visible_companies(user)
    return select(Co.id).where(scope).scalar_subquery()


def _num(value, digits: int = 3) -> float | None:
    return round(float(value), digits) if value is not None else None


async def _series(session: AsyncSession, ts, value, where, unit: str, since) -> list[schemas.TrendData]:
    bucket = func.date_trunc(unit, ts)
    rows = (await session.execute(select(bucket, value).where(where, ts >= since).group_by(bucket)
                                  .order_by(bucket))).all()
    out: list[schemas.TrendData] = []
    for b, v in rows:
        v = float(v or 0)
        out.append(schemas.TrendData(date=b, value=round(v, 4),
                                     change=round(v - out[-1].value, 4) if out else None))
    return out


async def stats(*, session: AsyncSession, user: Principal, period: schemas.StatsPeriod,
                company_id: uuid.UUID | None) -> schemas.DashboardStats:
    ids = await _company_ids(session, user, company_id)
    window, unit = STATS_WINDOW[period]
    since = utcnow() - window
    c = (await session.execute(select(func.count(), func.count().filter(Co.status == "active"))
                               .where(Co.id.in_(ids)))).one()
    a = (await session.execute(select(func.count(), func.count().filter(A.status == "active"))
                               .where(A.company_id.in_(ids)))).one()
    if user.can("metrics:read") and company_id is None:
        tools = (await session.execute(select(func.count()).select_from(Tl))).scalar_one()
    else:
        tools = (await session.execute(select(func.count(func.distinct(CT.tool_id)))
                                       .where(CT.company_id.in_(ids)))).scalar_one()
    t = (await session.execute(select(func.count(), func.count().filter(T.status == "completed"),
                                      func.count().filter(T.status == "failed")).where(T.company_id.in_(ids)))).one()
    overview = schemas.Overview(total_companies=c[0], active_companies=c[1], total_agents=a[0], active_agents=a[1],
                                total_tools=tools, total_tasks=t[0], completed_tasks=t[1], failed_tasks=t[2],
                                success_rate=percent(t[1], t[1] + t[2]))
    trends = schemas.Trends(
        companies=await _series(session, Co.created_at, func.count(), Co.id.in_(ids), unit, since),
        agents=await _series(session, A.created_at, func.count(), A.company_id.in_(ids), unit, since),
        tasks=await _series(session, T.created_at, func.count(), T.company_id.in_(ids), unit, since),
        performance=await _series(session, T.completed_at, func.avg(T.execution_time),
                                  and_(T.company_id.in_(ids), T.execution_time.is_not(None)), unit, since))
    return schemas.DashboardStats(period=period, overview=overview, trends=trends,
                                  top_performers=await _top(session, ids, since),
                                  recent_activity=await _activity(session, ids))


async def _top(session: AsyncSession, ids, since, limit: int = 5) -> schemas.TopPerformers:
    done, ok_ = T.status.in_(("completed", "failed")), T.status == "completed"
    companies = (await session.execute(
        select(Co.id, Co.name, func.count(T.id), func.count(T.id).filter(ok_), func.count(T.id).filter(done),
               func.avg(T.execution_time))
        .join(T, and_(T.company_id == Co.id, T.created_at >= since)).where(Co.id.in_(ids))
        .group_by(Co.id).order_by(func.count(T.id).filter(ok_).desc(), Co.name).limit(limit))).all()
    agents = (await session.execute(
        select(A.id, A.name, func.count(E.id), func.count(E.id).filter(E.status == "completed"),
               func.count(E.id).filter(E.status.in_(("completed", "failed"))), func.avg(E.execution_time))
        .join(E, and_(E.agent_id == A.id, E.started_at >= since)).where(A.company_id.in_(ids))
        .group_by(A.id).order_by(func.count(E.id).filter(E.status == "completed").desc(), A.name)
        .limit(limit))).all()
    tools = (await session.execute(
        select(Tl.id, Tl.name, func.count(TC.id), func.count(TC.id).filter(TC.success), func.avg(TC.duration_ms))
        .join(TC, and_(TC.tool_id == Tl.id, TC.created_at >= since)).where(TC.company_id.in_(ids))
        .group_by(Tl.id).order_by(func.count(TC.id).filter(TC.success).desc(), Tl.name).limit(limit))).all()
    return schemas.TopPerformers(
        companies=[schemas.CompanyPerformance(id=str(r[0]), name=r[1], total_tasks=r[2], success_rate=percent(r[3], r[4]),
                                              average_time=_num(r[5])) for r in companies],
        agents=[schemas.TopAgentPerformance(id=str(r[0]), name=r[1], total_executions=r[2],
                                         success_rate=percent(r[3], r[4]), average_time=_num(r[5])) for r in agents],
        tools=[schemas.ToolPerformance(id=str(r[0]), name=r[1], total_calls=r[2], success_rate=percent(r[3], r[2]),
                                       average_time=_num(r[4])) for r in tools])


async def _activity(session: AsyncSession, ids, limit: int = 20) -> list[schemas.Activity]:
    def row(id_, type_, title, desc, ts, uid, cid):
        return (cast(id_, String).label("id"), literal(type_).label("type"), title.label("title"),
                func.coalesce(desc, "").label("description"), ts.label("ts"), cast(uid, String).label("uid"),
                cast(cid, String).label("cid"))

    parts = union_all(
        select(*row(T.id, "task_completed", literal("Task completed: ") + T.name, T.description, T.completed_at,
                    T.created_by, T.company_id)).where(T.company_id.in_(ids), T.status == "completed",
                                                       T.completed_at.is_not(None)),
        select(*row(A.id, "agent_created", literal("Agent created: ") + A.name, A.description, A.created_at,
                    A.created_by, A.company_id)).where(A.company_id.in_(ids)),
        select(*row(L.id, "error_occurred", literal("Error in ") + L.source, L.message, L.created_at, L.user_id,
                    L.company_id)).where(L.company_id.in_(ids), L.level == "error"),
    ).subquery()
    rows = (await session.execute(select(parts).order_by(parts.c.ts.desc()).limit(limit))).all()
    return [schemas.Activity(id=r.id, type=r.type, title=r.title, description=r.description, timestamp=r.ts,
                             user_id=r.uid, company_id=r.cid) for r in rows]


def _load() -> schemas.SystemLoad:
    net = psutil.net_io_counters()
    return schemas.SystemLoad(cpu=psutil.cpu_percent(interval=0.2), memory=psutil.virtual_memory().percent,
                              disk=psutil.disk_usage(str(get_settings().data_dir.resolve())).percent,
                              network=schemas.NetworkIo(inbound=net.bytes_recv, outbound=net.bytes_sent))


async def performance(*, session: AsyncSession, user: Principal, period: schemas.PerfPeriod,
                      metrics: list[schemas.PerfTrend] | None,
                      company_id: uuid.UUID | None) -> schemas.DashboardPerformance:
    ids = await _company_ids(session, user, company_id)
    window, unit = PERF_WINDOW[period]
    since = utcnow() - window
    in_scope = T.company_id.in_(ids)
    finished = and_(in_scope, T.status.in_(("completed", "failed")), T.completed_at >= since)
    t = (await session.execute(select(func.count().filter(T.status == "completed"),
                                      func.count().filter(T.status == "failed"), func.avg(T.execution_time))
                               .where(finished))).one()
    node_ms = (await session.execute(select(func.avg(E.execution_time)).join(T, T.id == E.task_id)
                                     .where(in_scope, E.completed_at >= since))).scalar_one()
    cost = (await session.execute(select(func.avg(T.meta["cost"].as_float()))
                                  .where(in_scope, T.created_at >= since))).scalar_one()
    rating = (await session.execute(select(func.avg(R.rating)).join(A, A.id == R.agent_id)
                                    .where(A.company_id.in_(ids)))).scalar_one()
    hours = window.total_seconds() / 3600
    wanted = set(metrics or schemas.PerfTrend.__args__)
    trends = schemas.PerfTrends()
    if "responseTime" in wanted:
        trends.response_time = await _series(session, E.completed_at, func.avg(E.execution_time),
                                             E.task_id.in_(select(T.id).where(in_scope)), unit, since)
    if "throughput" in wanted:
        trends.throughput = await _series(session, T.completed_at, func.count(),
                                          and_(in_scope, T.status.in_(("completed", "failed"))), unit, since)
    if "errorRate" in wanted:
        trends.error_rate = await _series(
            session, T.completed_at, cast(func.count().filter(T.status == "failed"), Float) * 100 / func.count(),
            and_(in_scope, T.status.in_(("completed", "failed"))), unit, since)
    if "costs" in wanted:
        trends.costs = await _series(session, T.created_at, func.coalesce(func.sum(T.meta["cost"].as_float()), 0),
                                     in_scope, unit, since)
    return schemas.DashboardPerformance(
        period=period,
        system=await asyncio.to_thread(_load) if user.can("metrics:read") else None,
        application=schemas.ApplicationPerf(response_time=_num(node_ms), throughput=round((t[0] + t[1]) / hours, 4),
                                            error_rate=percent(t[1], t[0] + t[1]),
                                            uptime=round(time.time() - _STARTED, 3)),
        business=schemas.BusinessPerf(task_completion_rate=percent(t[0], t[0] + t[1]),
                                      average_execution_time=_num(t[2]), cost_per_task=_num(cost, 6),
                                      user_satisfaction=_num(rating)),
        trends=trends)


async def alerts(*, session: AsyncSession, user: Principal, severity: schemas.Severity | None,
                 status: schemas.AlertStatus | None, limit: int) -> schemas.DashboardAlerts:
    ids = await _company_ids(session, user, None)
    since = utcnow() - _ALERT_WINDOW

    def cols(id_, title, desc, sev, source, ts, cid, tid):
        return (cast(id_, String).label("id"), title.label("title"), func.coalesce(desc, "").label("description"),
                literal(sev).label("severity"), source.label("source"), ts.label("created_at"),
                cast(cid, String).label("company_id"), cast(tid, String).label("task_id"))

    parts = union_all(
        select(*cols(T.id, literal("Task failed: ") + T.name, cast(T.error, String), "high", literal("engine"),
                     func.coalesce(T.completed_at, T.updated_at), T.company_id, T.id))
        .where(T.company_id.in_(ids), T.status == "failed", func.coalesce(T.completed_at, T.updated_at) >= since),
        select(*cols(Co.id, literal("Company in error: ") + Co.name, Co.description, "high", literal("companies"),
                     Co.updated_at, Co.id, None)).where(Co.id.in_(ids), Co.status == "error"),
        select(*cols(A.id, literal("Agent in error: ") + A.name, A.description, "medium", literal("agents"),
                     A.updated_at, A.company_id, None)).where(A.company_id.in_(ids), A.status == "error"),
        select(*cols(L.id, literal("Error logged by ") + L.source, L.message, "medium", L.source, L.created_at,
                     L.company_id, L.task_id))
        .where(L.level == "error", L.created_at >= since,
               L.company_id.in_(ids) if not user.can("metrics:read") else true()),
    ).subquery()
    system_alerts = await asyncio.to_thread(_system_alerts) if user.can("metrics:read") else []
    # Every derived alert is active: none is stored, so none is resolved or acknowledged.
    if status not in (None, "active"):
        return schemas.DashboardAlerts(alerts=[], summary=schemas.AlertSummary(total=0, critical=0, high=0,
                                                                               medium=0, low=0))
    where = parts.c.severity == severity if severity else true()
    counts = dict((await session.execute(select(parts.c.severity, func.count()).group_by(parts.c.severity)))
                  .all())
    for a in system_alerts:
        counts[a.severity] = counts.get(a.severity, 0) + 1
    rows = (await session.execute(select(parts).where(where).order_by(parts.c.created_at.desc()).limit(limit))).all()
    found = [a for a in system_alerts if severity in (None, a.severity)] + [
        schemas.Alert(id=r.id, title=r.title, description=r.description[:1000], severity=r.severity, status="active",
                      source=r.source, created_at=r.created_at, company_id=r.company_id, task_id=r.task_id)
        for r in rows]
    summary = schemas.AlertSummary(total=sum(counts.values()), critical=counts.get("critical", 0),
                                   high=counts.get("high", 0), medium=counts.get("medium", 0),
                                   low=counts.get("low", 0))
    return schemas.DashboardAlerts(alerts=found[:limit], summary=summary)


def _system_alerts() -> list[schemas.Alert]:
    now, found = utcnow(), []
    disk = psutil.disk_usage(str(get_settings().data_dir.resolve())).percent
    memory = psutil.virtual_memory().percent
    if disk >= 90:
        found.append(schemas.Alert(id="system:disk", title="Data volume almost full",
                                   description=f"{disk:.1f}% used", severity="critical", status="active",
                                   source="system", created_at=now))
    if memory >= 90:
        found.append(schemas.Alert(id="system:memory", title="Host memory almost exhausted",
                                   description=f"{memory:.1f}% used", severity="high", status="active",
                                   source="system", created_at=now))
    return found
