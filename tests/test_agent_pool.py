"""Warm agent actors (troupe.actors.pool): a cold agent is served by a pooled actor
bound to it, that one actor enforces the agent's limits for every caller, a stale
binding (its actor killed) is replaced, and counters reach the agent's row."""

from __future__ import annotations

import asyncio
import time
import uuid

import ray

from tests.utils.engine import make_agent, make_company
from tests.utils.fixtures import assert_ok
from troupe.actors import handles
from troupe.actors import pool as agent_pool


@ray.remote(num_cpus=0)
def _call_from_task(agent_id: str, request: dict) -> dict:
    """The node-task path: a synchronous Ray task addressing ``agent:<id>``."""
    result = handles.call_sync(handles.agent_name(agent_id), "complete", request, timeout=30)
    return {"ok": result.ok, "meta": result.meta}


async def _bound(agent_id: str) -> tuple[str, object]:
    found = await agent_pool.bound_actor(agent_id)
    assert found is not None, "the agent has no bound actor"
    return found


async def test_pooled_activation_serves_a_cold_agent_and_holds_its_limit_for_every_caller(client, user):
    company = await make_company(user.id)
    agent = await make_agent(company, user.id, maxConcurrency=1)
    assert await agent_pool.bound_actor(agent) is None  # cold

    data = assert_ok(await client.post(f"/api/agents/{agent}/test", headers=user.headers, json={"input": "hi"}))
    assert data["output"].startswith("[simulated]")
    slot, actor = await _bound(agent)
    assert slot.startswith(agent_pool.SLOT_PREFIX)  # a pooled actor, not one started for this agent
    state = await actor.state.remote(agent)
    assert state["limit"] == 1 and state["agentId"] == agent

    # Two callers in two processes at once (this one, as an API replica calls, and a Ray
    # task, as a node calls), each call taking 1 s: with maxConcurrency 1 the one that
    # arrives second waits for the first (its response time includes the wait).
    fast = {"prompt": "warm-up", "timeout": 30, "extra": {}}
    assert (await _call_from_task.remote(agent, fast))["ok"]  # the task's worker is started and knows the binding
    slow = {"prompt": "slow", "timeout": 30, "extra": {"simulatedLatencyMs": 1000}}
    started = time.monotonic()
    here, there = await asyncio.gather(agent_pool.complete(agent, slow), _call_from_task.remote(agent, slow))
    elapsed = time.monotonic() - started
    assert here.ok and there["ok"]
    assert elapsed >= 2.0, elapsed  # one after the other, not side by side
    assert max(here.meta["responseTime"], there["meta"]["responseTime"]) >= 1500
    assert (await _bound(agent))[0] == slot  # the same actor served both

    # Its counters reach the row, written by the pool in the background.
    from troupe.db import models
    from troupe.db.session import session_scope

    for _ in range(50):
        async with session_scope() as session:
            row = await session.get(models.Agent, uuid.UUID(agent))
        if (row.performance or {}).get("totalRequests") == 4:
            break
        await asyncio.sleep(0.1)
    assert row.performance["totalRequests"] == 4 and row.performance["successfulRequests"] == 4
    assert row.performance["totalTokensUsed"] > 0 and row.last_used_at is not None


async def test_stale_binding_is_rebound_to_a_fresh_actor(client, user):
    company = await make_company(user.id)
    agent = await make_agent(company, user.id)
    assert_ok(await client.post(f"/api/agents/{agent}/test", headers=user.headers, json={"input": "one"}))
    slot, actor = await _bound(agent)
    ray.kill(actor, no_restart=True)
    for _ in range(50):  # the binding in Redis still names the dead actor
        if await agent_pool.bound_actor(agent) is None:
            break
        await asyncio.sleep(0.1)
    assert await agent_pool.bound_actor(agent) is None

    # The replica's cached handle is dead and the binding stale: the call still succeeds.
    data = assert_ok(await client.post(f"/api/agents/{agent}/test", headers=user.headers, json={"input": "two"}))
    assert data["output"].startswith("[simulated]")
    new_slot, new_actor = await _bound(agent)
    assert new_slot != slot
    assert (await new_actor.state.remote(agent))["agentId"] == agent
    from troupe.actors.residency import resident_key
    from troupe.infra.redis import get_redis

    assert await get_redis().zscore(resident_key(), agent) is not None


async def test_evicted_agent_leaves_and_is_activated_again(client, user):
    company = await make_company(user.id)
    agent = await make_agent(company, user.id)
    assert_ok(await client.post(f"/api/agents/{agent}/test", headers=user.headers, json={"input": "x"}))
    slot, actor = await _bound(agent)
    assert await actor.evict.remote(agent) is True  # idle: it leaves
    for _ in range(50):
        if await agent_pool.bound_actor(agent) is None:
            break
        await asyncio.sleep(0.1)
    assert await agent_pool.bound_actor(agent) is None
    from troupe.actors.residency import resident_key
    from troupe.infra.redis import get_redis

    assert await get_redis().zscore(resident_key(), agent) is None
    stats = await handles.call(handles.AGENT_POOL, "stats")
    assert agent not in stats["bound"]
    # Called again, the agent is simply activated again.
    assert_ok(await client.post(f"/api/agents/{agent}/test", headers=user.headers, json={"input": "y"}))
    assert (await _bound(agent))[0].startswith(agent_pool.SLOT_PREFIX)


async def test_idle_agent_leaves_by_itself(client, user):
    """Idle for TROUPE_ACTOR_IDLE_TIMEOUT (20 s in the suite): the agent's binding and
    residency go, and its counters were handed over before it left."""
    company = await make_company(user.id)
    agent = await make_agent(company, user.id)
    assert_ok(await client.post(f"/api/agents/{agent}/test", headers=user.headers, json={"input": "x"}))
    assert await agent_pool.bound_actor(agent) is not None
    for _ in range(60):  # idle timeout 20 s, checked about every second
        if await agent_pool.bound_actor(agent) is None:
            break
        await asyncio.sleep(1)
    assert await agent_pool.bound_actor(agent) is None
    from troupe.actors.residency import resident_key
    from troupe.db import models
    from troupe.db.session import session_scope
    from troupe.infra.redis import get_redis

    assert await get_redis().zscore(resident_key(), agent) is None
    async with session_scope() as session:
        row = await session.get(models.Agent, uuid.UUID(agent))
    assert row.performance["totalRequests"] == 1
