"""Idle deactivation and a cluster-wide bound on resident actors.

Company actors run ``IdleWatch``: after ``actor_idle_timeout`` without a call
and with no work in hand, one kills itself (the name is freed, the next call
re-activates it). Agent actors watch their own idleness and hand their agent
back to the pool (``troupe.actors.pool``), which registers each bound agent in
a Redis sorted set scored by last use; when an activation pushes the set past
``max_resident_agents``, the least recently used idle agents are asked to
leave. The set lives in Redis, so the bound holds across replicas and nodes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import ray

from troupe.config import get_settings
from troupe.infra.redis import get_redis, rkey


def resident_key() -> str:
    return rkey("engine", "resident", "agents")


class IdleWatch:
    def __init__(self, busy: Callable[[], bool], on_exit: Callable[[], object] | None = None) -> None:
        self.busy = busy
        self.on_exit = on_exit
        self.last_used = time.monotonic()
        self.task: asyncio.Task[None] | None = None

    def touch(self) -> None:
        self.last_used = time.monotonic()
        if self.task is None:
            self.task = asyncio.get_running_loop().create_task(self._watch())

    def idle_for(self) -> float:
        return time.monotonic() - self.last_used

    async def _watch(self) -> None:
        timeout = get_settings().actor_idle_timeout.total_seconds()
        while True:
            await asyncio.sleep(min(5.0, max(0.5, timeout / 4)))
            if not self.busy() and self.idle_for() >= timeout:
                await self.exit()

    async def exit(self) -> None:
        if self.on_exit is not None:
            result = self.on_exit()
            if asyncio.iscoroutine(result):
                await result
        ray.kill(ray.get_runtime_context().current_actor, no_restart=True)


async def register_agent(agent_id: str) -> list[str]:
    """Record ``agent_id`` as resident; return ids to evict (least recently used first)."""
    await get_redis().zadd(resident_key(), {agent_id: time.time()})
    return await over_bound(keep=agent_id)


async def register_agents(agent_ids: list[str]) -> None:
    """Make sure these agents are counted (without moving their last use)."""
    if agent_ids:
        now = time.time()
        await get_redis().zadd(resident_key(), dict.fromkeys(agent_ids, now), nx=True)


async def over_bound(keep: str | None = None) -> list[str]:
    """Residents past ``max_resident_agents``, least recently used first (never ``keep``)."""
    redis = get_redis()
    excess = await redis.zcard(resident_key()) - get_settings().max_resident_agents
    if excess <= 0:
        return []
    oldest = await redis.zrange(resident_key(), 0, excess - 1)
    return [a for a in oldest if a != keep]


async def unregister_agent(agent_id: str) -> None:
    await get_redis().zrem(resident_key(), agent_id)


async def resident_count() -> int:
    return int(await get_redis().zcard(resident_key()))
