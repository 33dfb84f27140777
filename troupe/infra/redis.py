"""One async Redis client per process (event loop)."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis

from troupe.config import get_settings

_clients: dict[int, aioredis.Redis] = {}


def get_redis() -> aioredis.Redis:
    # Keyed by loop: a client's connections belong to the loop that opened them,
    # and Ray actors / tests may run more than one loop in a process.
    loop_id = id(asyncio.get_running_loop())
    client = _clients.get(loop_id)
    if client is None:
        url = get_settings().redis_url
        if not url:
            raise RuntimeError("REDIS_URL is not set; start through troupe.infra.bootstrap")
        pool = aioredis.BlockingConnectionPool.from_url(
            url, decode_responses=True, health_check_interval=30,
            max_connections=get_settings().redis_max_connections, timeout=20)
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
