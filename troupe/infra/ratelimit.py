"""Sliding-window rate limits kept in Redis, so every replica shares one count."""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass

from redis.exceptions import TimeoutError as RedisTimeoutError

from troupe.config import get_settings
from troupe.infra.redis import get_redis, rkey

# Drop entries older than the window, count, and admit atomically.
_SLIDING_WINDOW = """
local key, now, window, limit, member = KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
redis.call('ZREMRANGEBYSCORE', key, 0, now - window)
local count = redis.call('ZCARD', key)
if count >= limit then
  local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
  return {0, count, tostring(oldest[2] + window - now)}
end
redis.call('ZADD', key, now, member)
redis.call('PEXPIRE', key, window)
return {1, count + 1, '0'}
"""


@dataclass(frozen=True)
class RateDecision:
    allowed: bool
    count: int
    limit: int
    retry_after_seconds: int


async def hit(key: str, *, limit: int, window_seconds: float,
              budget_seconds: float | None = None) -> RateDecision:
    """Record one event under ``key`` unless ``limit`` events already fell in the window.

    Bounded by ``budget_seconds`` (default ``redis_fast_timeout``): a hung Redis raises
    ``redis.exceptions.TimeoutError`` (an outage, see ``troupe.infra.faults``) instead of
    holding the request; each caller decides whether that admits or refuses."""
    redis = get_redis()
    now_ms = int(time.time() * 1000)
    window_ms = int(window_seconds * 1000)
    if budget_seconds is None:
        budget_seconds = get_settings().redis_fast_timeout.total_seconds()
    try:
        async with asyncio.timeout(budget_seconds):
            allowed, count, wait_ms = await redis.eval(
                _SLIDING_WINDOW, 1, rkey("rl", key), now_ms, window_ms, limit, f"{now_ms}-{uuid.uuid4().hex[:8]}")
    except TimeoutError as exc:
        raise RedisTimeoutError("rate limiter: Redis did not answer in time") from exc
    retry = max(1, -(-int(float(wait_ms)) // 1000)) if not int(allowed) else 0
    return RateDecision(bool(int(allowed)), int(count), limit, retry)


async def reset(key: str) -> None:
    await get_redis().delete(rkey("rl", key))
