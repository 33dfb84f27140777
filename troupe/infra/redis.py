"""One async Redis client per process (event loop), and the bound on optional calls."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from troupe.config import get_settings

_clients: dict[int, aioredis.Redis] = {}
# After an optional call found Redis unresponsive, the others skip it this long.
FAST_PATH_COOLDOWN_SECONDS = 1.0
_fast_path_skip_until = 0.0


def get_redis() -> aioredis.Redis:
    # Keyed by loop: a client's connections belong to the loop that opened them,
    # and Ray actors / tests may run more than one loop in a process.
    loop_id = id(asyncio.get_running_loop())
    client = _clients.get(loop_id)
    if client is None:
        settings = get_settings()
        if not settings.redis_url:
            raise RuntimeError("REDIS_URL is not set; start through troupe.infra.bootstrap")
        pool = aioredis.BlockingConnectionPool.from_url(
            settings.redis_url, decode_responses=True, health_check_interval=30,
            max_connections=settings.redis_max_connections,
            # Short timeouts so an outage is an error within about a second, never a hang
            # (a SIGSTOPped server still accepts TCP connections, so only a read timeout sees it).
            # Pub/sub is unaffected: the hub polls get_message(timeout=...) and redis-py's
            # blocking pub/sub reads opt out of socket_timeout.
            timeout=settings.redis_pool_timeout.total_seconds(),
            socket_connect_timeout=settings.redis_connect_timeout.total_seconds(),
            socket_timeout=settings.redis_socket_timeout.total_seconds(),
            socket_keepalive=True,
            # No silent retries: each would add another socket_timeout to the caller's wait.
            # Callers that should wait an outage out (the run driver) retry with their own backoff.
            retry=Retry(NoBackoff(), 0))
        client = aioredis.Redis.from_pool(pool)  # owns the pool: aclose() releases it
        _clients[loop_id] = client
    return client


def rkey(*parts: object) -> str:
    """The one way to name a Redis key or channel: ``<prefix>:<part>:<part>``."""
    return ":".join([get_settings().redis_prefix, *map(str, parts)])


async def close_redis() -> None:
    loop_id = id(asyncio.get_running_loop())
    client = _clients.pop(loop_id, None)
    if client is not None:
        await client.aclose()


@asynccontextmanager
async def fast_path() -> AsyncIterator[None]:
    """Bound a Redis call that has a safe answer without Redis (the API rate limit, the
    settings-version check) by ``redis_fast_timeout``; raises ``redis.exceptions.TimeoutError``
    when it runs out, so the caller takes its fallback.

    Once such a call found Redis unresponsive, the others in this process fail at once for
    FAST_PATH_COOLDOWN_SECONDS instead of each spending the budget again: during an outage a
    request then spends its 2 s only where Redis is required (and answers 503 there)."""
    global _fast_path_skip_until
    if time.monotonic() < _fast_path_skip_until:
        raise RedisTimeoutError("Redis was unresponsive a moment ago; optional call skipped")
    try:
        async with asyncio.timeout(get_settings().redis_fast_timeout.total_seconds()):
            yield
    except TimeoutError as exc:
        _fast_path_skip_until = time.monotonic() + FAST_PATH_COOLDOWN_SECONDS
        raise RedisTimeoutError("Redis did not answer within redis_fast_timeout") from exc
    except (RedisConnectionError, RedisTimeoutError):
        _fast_path_skip_until = time.monotonic() + FAST_PATH_COOLDOWN_SECONDS
        raise
