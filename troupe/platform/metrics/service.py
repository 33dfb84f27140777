"""Metrics read from what exists: the host (psutil), Ray's cluster state,
PostgreSQL's statistics views, Redis INFO, and the platform's own rows
(tasks, task_executions, tool_calls) aggregated in SQL.

HTTP request latency/throughput is recorded as Ray Prometheus metrics
(troupe.infra.metrics) and is scraped from Ray's metrics export port, not
queried here."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from datetime import datetime, timedelta

import psutil
from sqlalchemy import Float, and_, cast, distinct, func, literal, select, text, union
from sqlalchemy.ext.asyncio import AsyncSession

from troupe import __version__
from troupe.config import get_settings
from troupe.db import models
from troupe.errors import invalid
from troupe.infra.redis import get_redis
from troupe.platform.access import load_company
from troupe.platform.deps import Principal
from troupe.platform.metrics import schemas
from troupe.platform.schemas import percent
from troupe.timeutil import as_utc, utcnow

_PROCESS_STARTED = time.time()
GRANULARITY_SECONDS = {"minute": 60, "hour": 3600, "day": 86_400, "week": 604_800}
PERIODS = {"day": 1, "week": 7, "month": 30, "quarter": 90, "year": 365}
_MAX_BUCKETS = 5000


# --------------------------------------------------------------------------- system


def _host() -> tuple[schemas.HostMetrics, schemas.ProcessMetrics]:
    mem = psutil.virtual_memory()
    disk = psutil.disk_usage(str(get_settings().data_dir.resolve()))
    net = psutil.net_io_counters()
    proc = psutil.Process()
    host = schemas.HostMetrics(
        cpu=schemas.Cpu(usage=psutil.cpu_percent(interval=0.2), cores=psutil.cpu_count() or 1,
                        load_average=[round(x, 3) for x in os.getloadavg()]),
        memory=schemas.Memory(total=mem.total, used=mem.used, free=mem.available,
                              cached=getattr(mem, "cached", None)),
        disk=schemas.Disk(total=disk.total, used=disk.used, free=disk.free),
        network=schemas.Network(inbound=net.bytes_recv, outbound=net.bytes_sent))
    process = schemas.ProcessMetrics(pid=proc.pid, rss=proc.memory_info().rss,
                                     cpu_percent=proc.cpu_percent(interval=None), threads=proc.num_threads())
    return host, process


def _ray() -> schemas.RayMetrics:
    import ray

    return schemas.RayMetrics(nodes=sum(1 for n in ray.nodes() if n.get("Alive")),
                              cluster_resources=ray.cluster_resources(),
                              available_resources=ray.available_resources())


async def _redis() -> tuple[schemas.RedisMetrics, dict]:
    info = await get_redis().info()
    return schemas.RedisMetrics(version=info.get("redis_version"), used_memory=info.get("used_memory"),
                                connected_clients=info.get("connected_clients"),
                                ops_per_sec=info.get("instantaneous_ops_per_sec"),
                                uptime=info.get("uptime_in_seconds")), info


async def _database(session: AsyncSession) -> schemas.DatabaseMetrics:
    row = (await session.execute(text("""
        SELECT (SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()) AS connections,
               (SELECT avg(extract(epoch FROM now() - query_start)) * 1000 FROM pg_stat_activity
                 WHERE datname = current_database() AND state = 'active' AND pid <> pg_backend_pid()) AS query_ms,
               (SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND state = 'active'
                 AND now() - query_start > interval '1 second') AS slow,
               pg_database_size(current_database()) AS size,
               d.xact_commit, d.xact_rollback, d.blks_hit, d.blks_read, d.deadlocks
          FROM pg_stat_database d WHERE d.datname = current_database()"""))).one()
    blocks = (row.blks_hit or 0) + (row.blks_read or 0)
    return schemas.DatabaseMetrics(
        connections=row.connections, query_time=round(float(row.query_ms), 3) if row.query_ms is not None else None,
        slow_queries=row.slow, size=row.size, commits=row.xact_commit, rollbacks=row.xact_rollback,
        cache_hit_rate=round(row.blks_hit / blocks, 4) if blocks else None, deadlocks=row.deadlocks)


async def system(*, session: AsyncSession) -> schemas.SystemMetrics:
    (host, process), ray_metrics, (redis_metrics, info), database = await asyncio.gather(
        asyncio.to_thread(_host), asyncio.to_thread(_ray), _redis(), _database(session))
    host.network.connections = database.connections
    Task = models.Task
    queued, running = (await session.execute(select(
        func.count().filter(Task.status == "pending", Task.queued_at.is_not(None)),
        func.count().filter(Task.status == "running")))).one()
    hits, misses = info.get("keyspace_hits", 0), info.get("keyspace_misses", 0)
    application = schemas.ApplicationMetrics(
        uptime=round(time.time() - _PROCESS_STARTED, 3), version=__version__, environment=get_settings().env,
        active_connections=redis_metrics.connected_clients, queue_size=queued, running_tasks=running,
        cache_hit_rate=round(hits / (hits + misses), 4) if hits + misses else None)
    return schemas.SystemMetrics(timestamp=utcnow(), system=host, application=application, database=database,
                                 ray=ray_metrics, redis=redis_metrics, process=process)


# --------------------------------------------------------------------------- performance


def _window(start: datetime | None, end: datetime | None, default: timedelta) -> tuple[datetime, datetime]:
    end = as_utc(end) if end else utcnow()
    start = as_utc(start) if start else end - default
    if start >= end:
        raise invalid("startDate must be before endDate", field="startDate")
    return start, end


def _sample_metric(name: str, start: datetime, end: datetime):
    """(timestamp column, value expression, extra conditions) for per-row metrics."""
    T, E, C = models.Task, models.TaskExecution, models.ToolCall
    if name == "taskDuration":
        return T.completed_at, cast(T.execution_time, Float), [T.execution_time.is_not(None)]
    if name == "taskQueueTime":
        return (T.started_at, func.greatest(func.extract("epoch", T.started_at - func.coalesce(T.queued_at, T.created_at)) * 1000, 0),
                [T.started_at.is_not(None)])
    if name == "nodeDuration":
        return E.completed_at, cast(E.execution_time, Float), [E.execution_time.is_not(None)]
    return C.created_at, cast(C.duration_ms, Float), [C.duration_ms.is_not(None)]


def _summary_cols(v):
    return (func.min(v), func.max(v), func.avg(v), func.percentile_cont(0.5).within_group(v),
            func.percentile_cont(0.95).within_group(v), func.percentile_cont(0.99).within_group(v), func.count(v))


def _summary(row) -> schemas.Summary | None:
    if not row or not row[6]:
        return None
    return schemas.Summary(min=row[0], max=row[1], avg=round(float(row[2]), 3), p50=row[3], p95=row[4], p99=row[5],
                           count=row[6])


async def performance(*, session: AsyncSession, start_date: datetime | None, end_date: datetime | None,
                      granularity: schemas.Granularity,
                      metrics: list[schemas.PerfMetric] | None) -> schemas.PerformanceMetrics:
    start, end = _window(start_date, end_date, timedelta(days=1))
    if (end - start).total_seconds() / GRANULARITY_SECONDS[granularity] > _MAX_BUCKETS:
        raise invalid(f"Too many {granularity} buckets in this range (max {_MAX_BUCKETS})", field="granularity")
    wanted = metrics or list(schemas.PerfMetric.__args__)
    series: dict[str, list[schemas.Point]] = {}
    summary: dict[str, schemas.Summary | None] = {}
    for name in dict.fromkeys(wanted):
        if name in ("taskThroughput", "taskErrorRate"):
            T = models.Task
            ts = T.completed_at
            bucket = func.date_trunc(granularity, ts).label("bucket")
            done = T.status.in_(("completed", "failed"))
            value = (func.count() if name == "taskThroughput" else
                     cast(func.count().filter(T.status == "failed"), Float) / func.count()).label("value")
            inner = (select(bucket, value).where(done, ts >= start, ts < end).group_by(bucket)
                     .subquery())
            rows = (await session.execute(select(inner.c.bucket, inner.c.value).order_by(inner.c.bucket))).all()
            agg = (await session.execute(select(*_summary_cols(inner.c.value)))).one()
        else:
            ts, v, extra = _sample_metric(name, start, end)
            where = and_(ts >= start, ts < end, *extra)
            bucket = func.date_trunc(granularity, ts)
            rows = (await session.execute(select(bucket, func.avg(v)).where(where).group_by(bucket)
                                          .order_by(bucket))).all()
            agg = (await session.execute(select(*_summary_cols(v)).where(where))).one()
        series[name] = [schemas.Point(timestamp=b, value=round(float(val), 4)) for b, val in rows]
        summary[name] = _summary(agg)
    return schemas.PerformanceMetrics(start_date=start, end_date=end, granularity=granularity,
                                      time_series=series, summary=summary)


# --------------------------------------------------------------------------- business


def _growth(now: int, before: int) -> float | None:
    return round((now - before) / before * 100, 2) if before else None


async def business(*, session: AsyncSession, user: Principal, period: schemas.BusinessPeriod,
                   company_id: uuid.UUID | None) -> schemas.BusinessMetrics:
    T, A, Co, U, R = models.Task, models.Agent, models.Company, models.User, models.AgentReview
    end = utcnow()
    start = end - timedelta(days=PERIODS[period])
    prev = start - timedelta(days=PERIODS[period])
    if company_id is not None:
        await load_company(session, user, company_id, "read")
    task_scope = T.company_id == company_id if company_id else literal(True)
    agent_scope = A.company_id == company_id if company_id else literal(True)
    company_scope = Co.id == company_id if company_id else literal(True)

    def in_window(col, lo, hi):
        return and_(col >= lo, col < hi)

    t = (await session.execute(select(
        func.count(),
        func.count().filter(in_window(T.created_at, start, end)),
        func.count().filter(in_window(T.created_at, prev, start)),
        func.count().filter(in_window(T.completed_at, start, end), T.status == "completed"),
        func.count().filter(in_window(T.completed_at, start, end), T.status == "failed"),
        func.avg(T.execution_time).filter(in_window(T.completed_at, start, end)),
        func.coalesce(func.sum(T.meta["cost"].as_float()).filter(in_window(T.created_at, start, end)), 0),
        func.coalesce(func.sum(T.meta["resourceUsage"]["tokens"].as_integer())
                      .filter(in_window(T.created_at, start, end)), 0),
    ).where(task_scope))).one()
    agents = (await session.execute(select(func.count()).select_from(A).where(agent_scope))).scalar_one()
    c = (await session.execute(select(func.count(), func.count().filter(in_window(Co.created_at, start, end)),
                                      func.count().filter(in_window(Co.created_at, prev, start)))
                               .where(company_scope))).one()
    u = (await session.execute(select(func.count().filter(in_window(U.created_at, start, end)),
                                      func.count().filter(in_window(U.created_at, prev, start)))
                               .where(U.deleted_at.is_(None)))).one()
    active = union(select(T.created_by.label("uid")).where(task_scope, in_window(T.created_at, start, end)),
                   select(U.id.label("uid")).where(in_window(U.last_login_at, start, end))).subquery()
    active_users = (await session.execute(select(func.count(distinct(active.c.uid)))
                                          .where(active.c.uid.is_not(None)))).scalar_one()
    rating = (await session.execute(select(func.avg(R.rating)).join(A, A.id == R.agent_id)
                                    .where(agent_scope, in_window(R.created_at, start, end)))).scalar_one()
    finished = t[3] + t[4]
    ai_cost = round(float(t[6]), 6)
    return schemas.BusinessMetrics(
        period=period, start_date=start, end_date=end, revenue=schemas.Revenue(),
        usage=schemas.Usage(total_tasks=t[0], total_agents=agents, total_companies=c[0], active_users=active_users,
                            new_tasks=t[1], new_companies=c[1], new_users=u[0], task_growth=_growth(t[1], t[2]),
                            company_growth=_growth(c[1], c[2]), user_growth=_growth(u[0], u[1])),
        performance=schemas.BusinessPerformance(
            success_rate=percent(t[3], finished),
            average_response_time=round(float(t[5]), 3) if t[5] is not None else None,
            customer_satisfaction=round(float(rating), 3) if rating is not None else None),
        costs=schemas.Costs(ai=ai_cost, total=ai_cost, tokens=int(t[7])))
