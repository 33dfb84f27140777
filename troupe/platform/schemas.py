"""Shared pydantic models: the spec's response envelope, pagination and list parameters
(the camelCase bases live in ``troupe.models_base`` and are re-exported here)."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Annotated, Any, Generic, TypeVar

from pydantic import AfterValidator, AwareDatetime, Field

from troupe import __version__
from troupe.models_base import CamelModel as CamelModel  # re-exported: the domains import it from here
from troupe.models_base import RoundTripInput as RoundTripInput
from troupe.models_base import StrictInput as StrictInput
from troupe.models_base import omittable as omittable
from troupe.platform.context import current_request

T = TypeVar("T")


def _to_utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


UtcDateTime = Annotated[AwareDatetime, AfterValidator(_to_utc)]
"""An input time (body field or query parameter): RFC 3339 with an offset (``Z`` or
``+02:00``); one without is refused (``timezone_aware``, VAL_003 naming the field). The
value is normalised to UTC, so it serialises back with ``Z``."""


class ErrorBody(CamelModel):
    code: str
    message: str
    details: Any = None
    field: str | None = None
    timestamp: str | None = None
    request_id: str | None = None


class Pagination(CamelModel):
    page: int
    limit: int
    total: int
    total_pages: int
    has_next: bool
    has_prev: bool

    @classmethod
    def of(cls, *, page: int, limit: int, total: int) -> Pagination:
        pages = math.ceil(total / limit) if limit else 0
        return cls(page=page, limit=limit, total=total, total_pages=pages, has_next=page < pages,
                   has_prev=page > 1)


class Meta(CamelModel):
    timestamp: str
    version: str
    request_id: str
    execution_time: float = Field(description="Milliseconds spent serving the request")


class Envelope(CamelModel, Generic[T]):
    success: bool = True
    data: T | None = None
    error: ErrorBody | None = None
    pagination: Pagination | None = None
    meta: Meta | None = None


def build_meta() -> Meta:
    ctx = current_request()
    return Meta(timestamp=datetime.now(UTC).isoformat().replace("+00:00", "Z"), version=__version__,
                request_id=ctx.request_id, execution_time=round(ctx.elapsed_ms(), 3))


def ok(data: Any = None, *, pagination: Pagination | None = None) -> Envelope[Any]:
    return Envelope(success=True, data=data, pagination=pagination, meta=build_meta())


class Message(CamelModel):
    message: str


MAX_PAGE_LIMIT = 100


def _clamp_limit(value: int) -> int:
    return min(value, MAX_PAGE_LIMIT)


PageLimit = Annotated[int, Field(ge=1, description=f"Items per page; a larger value is served as {MAX_PAGE_LIMIT} "
                                                   "(pagination.limit says what was used)"),
                      AfterValidator(_clamp_limit)]
"""Every list's ``limit``: clamped to 100 rather than refused, so a client asking for
"everything" gets the first 100 and the pagination to fetch the rest."""


class PageParams(CamelModel):
    """Common list parameters: the limit is clamped so one request can't scan a table."""

    page: int = Field(1, ge=1, le=100_000)
    limit: PageLimit = 20
    sort: str | None = Field(None, max_length=50)
    order: str = Field("desc", pattern="^(asc|desc)$")
    search: str | None = Field(None, max_length=200)

    @property
    def offset(self) -> int:
        return (self.page - 1) * self.limit


def deep_merge(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """A partial update of a JSON document: nested objects merge key by key; lists
    and scalars replace."""
    merged = dict(base)
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def percent(part: int, whole: int) -> float:
    """The API's one rate unit: a percentage (0-100), two decimals; 0 when there is nothing to count."""
    return round(100.0 * part / whole, 2) if whole else 0.0
