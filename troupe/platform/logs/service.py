"""Log search: filtering, counting, aggregation and paging happen in SQL."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import ColumnElement, and_, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from troupe.db import models
from troupe.errors import invalid
from troupe.platform.logs import schemas
from troupe.timeutil import as_utc

Log = models.Log
_MAX_HOURS = 24 * 7  # byHour covers at most the last week of matches, so it stays small


def _escape_like(term: str) -> str:
    return term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _filters(*, level: str | None, source: str | None, company_id: uuid.UUID | None,
             user_id: uuid.UUID | None, task_id: uuid.UUID | None, request_id: str | None,
             start_date: datetime | None, end_date: datetime | None,
             search: str | None) -> list[ColumnElement[bool]]:
    if start_date and end_date and start_date > end_date:
        raise invalid("startDate must not be after endDate", field="startDate")
    conds: list[ColumnElement[bool]] = []
    if level:
        conds.append(Log.level == level)
    if source:
        conds.append(Log.source == source)
    if company_id:
        conds.append(Log.company_id == company_id)
    if user_id:
        conds.append(Log.user_id == user_id)
    if task_id:
        conds.append(Log.task_id == task_id)
    if request_id:
        conds.append(Log.request_id == request_id)
    if start_date:
        conds.append(Log.created_at >= _utc(start_date))
    if end_date:
        conds.append(Log.created_at <= _utc(end_date))
    if search:
        pattern = f"%{_escape_like(search)}%"
        conds.append(or_(Log.message.ilike(pattern, escape="\\"), Log.source.ilike(pattern, escape="\\")))
    return conds


def _utc(value: datetime) -> datetime:
    return as_utc(value)


def log_entry(row: models.Log) -> schemas.LogEntry:
    """The spec's LogEntry, for every route that answers log rows (logs, company and task logs)."""
    return schemas.LogEntry(id=row.id, timestamp=row.created_at, level=row.level, source=row.source,
                            message=row.message, details=row.details, user_id=row.user_id,
                            company_id=row.company_id, task_id=row.task_id, request_id=row.request_id,
                            duration=row.duration)


async def search(*, session: AsyncSession, page: int, limit: int, **filters) -> tuple[schemas.LogPage, int]:
    where = and_(*_filters(**filters))
    total = (await session.execute(select(func.count()).select_from(Log).where(where))).scalar_one()
    rows = (await session.execute(select(Log).where(where).order_by(Log.created_at.desc(), Log.id.desc())
                                  .offset((page - 1) * limit).limit(limit))).scalars().all()
    by_level = dict((await session.execute(select(Log.level, func.count()).where(where)
                                           .group_by(Log.level))).all())
    by_source = dict((await session.execute(select(Log.source, func.count()).where(where)
                                            .group_by(Log.source))).all())
    hour = func.date_trunc("hour", Log.created_at)
    by_hour = (await session.execute(select(hour, func.count()).where(where).group_by(hour)
                                     .order_by(hour.desc()).limit(_MAX_HOURS))).all()
    logs = [log_entry(r) for r in rows]
    aggregations = schemas.LogAggregations(
        by_level=by_level, by_source=by_source,
        by_hour=[schemas.HourCount(hour=h, count=c) for h, c in reversed(by_hour)])
    return schemas.LogPage(logs=logs, aggregations=aggregations), total
