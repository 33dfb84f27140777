"""Async engine and sessions (psycopg 3), one pool per process."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.pool import NullPool

from troupe.config import Settings, get_settings

_engine: AsyncEngine | None = None
_sessionmaker: async_sessionmaker[AsyncSession] | None = None
# Connections per process. The API replicas keep the configured pool; actors and
# node-task workers are many processes (one per resident agent), so idle pooled
# connections there would exhaust the server's max_connections.
_pool: str = "default"


def set_pool(kind: str) -> None:
    """``default`` (the API's pool), ``company`` (a company actor's pool, which all of that
    company's concurrent runs share) or ``none`` (connect per use: agent actors and node
    tasks, which are many). Call before the first database access in the process."""
    global _pool
    if kind not in ("default", "company", "none"):
        raise ValueError(f"unknown pool kind {kind!r}")
    _pool = kind


def sqlalchemy_url(url: str) -> str:
    """Accept postgres://, postgresql:// or postgresql+psycopg:// and use psycopg 3."""
    parts = urlsplit(url)
    scheme = parts.scheme.split("+")[0]
    if scheme not in ("postgres", "postgresql"):
        raise ValueError(f"DATABASE_URL must be a PostgreSQL URL, got scheme {parts.scheme!r}")
    return urlunsplit(("postgresql+psycopg",) + tuple(parts[1:]))


def connect_timeouts(settings: Settings) -> dict[str, int]:
    """libpq parameters that turn a dead or unreachable server into an error within
    seconds: connect_timeout for the connection itself, keepalives and tcp_user_timeout
    for an established connection whose peer vanished without a reset."""
    tcp_seconds = max(3, int(settings.db_tcp_timeout.total_seconds()))
    return {
        # libpq takes whole seconds and treats 1 as 2; at least 2 keeps that explicit.
        "connect_timeout": max(2, math.ceil(settings.db_connect_timeout.total_seconds())),
        "keepalives": 1,
        "keepalives_idle": max(1, tcp_seconds // 2),
        "keepalives_interval": max(1, tcp_seconds // 6),
        "keepalives_count": 3,
        "tcp_user_timeout": tcp_seconds * 1000,
    }


class ReadBoundedConnection(psycopg.AsyncConnection):
    """A psycopg connection whose every wait for the server is bounded by ``read_timeout``:
    psycopg has no read timeout, and a server that hangs with the connection open (stopped,
    or a stalled disk) would otherwise hold the request forever."""

    read_timeout: float | None = None

    async def wait(self, gen: Any, interval: float = 0.1,
                   timeout: float | None = None) -> Any:  # noqa: ASYNC109 - psycopg's own signature
        try:
            return await super().wait(gen, interval, timeout if timeout is not None else self.read_timeout)
        except _WAIT_TIMEOUT as exc:
            # The server may still answer the abandoned statement: the connection is unusable.
            # Closing it makes SQLAlchemy discard it instead of returning it to the pool.
            self.pgconn.finish()
            raise psycopg.OperationalError(f"no answer from the server within {self.read_timeout} s") from exc


# psycopg's own "wait expired" error (internal name, hence looked up defensively).
_WAIT_TIMEOUT: type[BaseException] = getattr(psycopg.errors, "_WaitTimeout", psycopg.errors.OperationalError)


def read_bounded(read_timeout: float) -> type[ReadBoundedConnection]:
    return type("ReadBoundedConnection", (ReadBoundedConnection,), {"read_timeout": read_timeout})


def get_engine() -> AsyncEngine:
    global _engine, _sessionmaker
    if _engine is None:
        settings = get_settings()
        if not settings.database_url:
            raise RuntimeError("DATABASE_URL is not set; start through troupe.infra.bootstrap")
        if _pool == "none":
            sizing: dict = {"poolclass": NullPool}
        elif _pool == "company":
            sizing = {"pool_size": settings.db_company_pool_size, "max_overflow": settings.db_company_max_overflow,
                      "pool_timeout": settings.db_company_pool_timeout.total_seconds(), "pool_pre_ping": True}
        else:
            sizing = {"pool_size": settings.db_pool_size, "max_overflow": settings.db_max_overflow,
                      "pool_timeout": settings.db_pool_timeout.total_seconds(), "pool_pre_ping": True}
        connect_args: dict[str, Any] = {"options": "-c timezone=UTC", **connect_timeouts(settings)}
        read_timeout = settings.db_read_timeout.total_seconds()
        if _pool == "default" and read_timeout > 0:
            # The API's pool only: a request must end. Runs (company actors, node tasks) have
            # their own outage handling and may run long statements.
            connect_args["async_creator_fn"] = read_bounded(read_timeout).connect
        _engine = create_async_engine(
            sqlalchemy_url(settings.database_url),
            # Timestamps are naive UTC throughout, as in the spec's TIMESTAMP columns.
            connect_args=connect_args,
            **sizing,
        )
        _sessionmaker = async_sessionmaker(_engine, expire_on_commit=False)
    return _engine


def sessionmaker() -> async_sessionmaker[AsyncSession]:
    get_engine()
    assert _sessionmaker is not None
    return _sessionmaker


@asynccontextmanager
async def session_scope() -> AsyncIterator[AsyncSession]:
    """A unit of work: commits on success, rolls back on any error."""
    async with sessionmaker()() as session:
        try:
            yield session
            await session.commit()
        except BaseException:
            await session.rollback()
            raise


async def dispose_engine() -> None:
    global _engine, _sessionmaker
    if _engine is not None:
        await _engine.dispose()
    _engine, _sessionmaker = None, None
