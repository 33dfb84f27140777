"""Times are aware UTC everywhere: ``timestamptz`` columns (read back in UTC whatever the
session's time zone, ``troupe.db.base.UtcTimestamp``), RFC 3339 with ``Z`` on the wire."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """An aware time in UTC; a naive one is taken to be UTC already (stored text, old payloads)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def parse_iso(value: str) -> datetime:
    """An ISO-8601 / RFC 3339 string (``Z``, an offset, or none = UTC) as an aware UTC time."""
    return as_utc(datetime.fromisoformat(value))


def iso(value: datetime | None, *, timespec: str = "milliseconds") -> str | None:
    """RFC 3339 in UTC with a Z (fixed width, so text order is time order), for payloads
    built by hand (events, exports, JSON documents)."""
    if value is None:
        return None
    return as_utc(value).replace(tzinfo=None).isoformat(timespec=timespec) + "Z"


class UtcLogFormatter(logging.Formatter):
    """Log lines stamped in RFC 3339 UTC (``2026-01-01T12:00:00.123Z``)."""

    converter = time.gmtime

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        return time.strftime("%Y-%m-%dT%H:%M:%S", self.converter(record.created)) + f".{int(record.msecs):03d}Z"


def log_handler() -> logging.Handler:
    handler = logging.StreamHandler()
    handler.setFormatter(UtcLogFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    return handler
