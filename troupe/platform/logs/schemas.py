from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from troupe.platform.schemas import CamelModel

LogLevel = Literal["debug", "info", "warn", "error"]


class LogEntry(CamelModel):
    id: uuid.UUID
    timestamp: datetime
    level: str
    source: str
    message: str
    details: Any = None
    user_id: uuid.UUID | None = None
    company_id: uuid.UUID | None = None
    task_id: uuid.UUID | None = None
    request_id: str | None = None
    duration: int | None = None


class HourCount(CamelModel):
    hour: datetime
    count: int


class LogAggregations(CamelModel):
    """Over every row matching the filters, not only the returned page."""

    by_level: dict[str, int]
    by_source: dict[str, int]
    by_hour: list[HourCount]


class LogPage(CamelModel):
    logs: list[LogEntry]
    aggregations: LogAggregations
