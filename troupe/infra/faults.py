"""Which failures are an outage of a backing service (Postgres, Redis) rather than a bug.

An outage is waited out (the run driver retries with backoff) or answered at once
with 503 (the API); anything else is a real failure. One classifier, used by both.
"""

from __future__ import annotations

from typing import Literal

Dependency = Literal["postgres", "redis"]


def outage_of(exc: BaseException) -> Dependency | None:
    """``postgres`` or ``redis`` if ``exc`` (or what it wraps) says that service is
    unreachable, timed out or dropped the connection; ``None`` otherwise."""
    seen: set[int] = set()
    pending: list[BaseException] = [exc]
    while pending:
        current: BaseException | None = pending.pop()
        while current is not None and id(current) not in seen:
            seen.add(id(current))
            found = _classify(current)
            if found is not None:
                return found
            # Task groups (anyio, asyncio) raise a group; any member may be the outage.
            if isinstance(current, BaseExceptionGroup):
                pending.extend(current.exceptions)
            # A Ray actor's failure arrives as RayTaskError carrying the actor's exception as .cause.
            cause = getattr(current, "cause", None)
            if isinstance(cause, BaseException) and (type(current).__module__ or "").startswith("ray"):
                pending.append(cause)
            current = current.__cause__ or current.__context__
    return None


def _classify(exc: BaseException) -> Dependency | None:
    module = type(exc).__module__ or ""
    name = type(exc).__name__
    if module.startswith("redis"):
        # redis.exceptions.ConnectionError / TimeoutError / BusyLoadingError and the pool's own errors.
        if name in ("ConnectionError", "TimeoutError", "BusyLoadingError", "MaxConnectionsError",
                    "ReadOnlyError", "TryAgainError"):
            return "redis"
        return None
    if module.startswith("psycopg"):
        # OperationalError covers refused, reset and admin shutdown (57P01); PoolTimeout is a wait for a connection.
        if name in ("OperationalError", "InterfaceError", "PoolTimeout", "ConnectionTimeout",
                    "AdminShutdown", "CannotConnectNow", "CrashShutdown", "ConnectionException",
                    "ConnectionFailure", "SqlclientUnableToEstablishSqlconnection", "QueryCanceled"):
            return "postgres"
        return None
    if module.startswith("sqlalchemy"):
        if getattr(exc, "connection_invalidated", False):
            return "postgres"
        if name in ("OperationalError", "InterfaceError", "TimeoutError", "DisconnectionError"):
            return "postgres"
        return None
    return None


def is_outage(exc: BaseException) -> bool:
    return outage_of(exc) is not None
