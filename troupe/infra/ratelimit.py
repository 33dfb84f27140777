"""Sliding-window rate limits kept in Redis, so every replica shares one count."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

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


async def hit(key: str, *, limit: int, window_seconds: float) -> RateDecision:
    """Record one event under ``key`` unless ``limit`` events already fell in the window.

    With Redis down this raises its error within ``redis_socket_timeout``; each caller decides
    whether that admits (the API limit, under ``fast_path``) or refuses (the login limit)."""
    redis = get_redis()
    now_ms = int(time.time() * 1000)
    window_ms = int(window_seconds * 1000)
    allowed, count, wait_ms = await redis.eval(
        _SLIDING_WINDOW, 1, rkey("rl", key), now_ms, window_ms, limit, f"{now_ms}-{uuid.uuid4().hex[:8]}")
    retry = max(1, -(-int(float(wait_ms)) // 1000)) if not int(allowed) else 0
    return RateDecision(bool(int(allowed)), int(count), limit, retry)


async def reset(key: str) -> None:
    await get_redis().delete(rkey("rl", key))
