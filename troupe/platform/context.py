"""Per-request context (request id, start time) carried in a contextvar so the
envelope and logs can reach it without threading it through every call."""

from __future__ import annotations

import time
import uuid
from contextvars import ContextVar
from dataclasses import dataclass, field


@dataclass
class RequestContext:
    request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    started: float = field(default_factory=time.perf_counter)
    client_ip: str | None = None

    def elapsed_ms(self) -> float:
        return (time.perf_counter() - self.started) * 1000


_ctx: ContextVar[RequestContext | None] = ContextVar("troupe_request", default=None)


def current_request() -> RequestContext:
    ctx = _ctx.get()
    if ctx is None:
        ctx = RequestContext()
        _ctx.set(ctx)
    return ctx


def set_request(ctx: RequestContext) -> None:
    _ctx.set(ctx)
