"""The warm pool of agent actors, and where an agent's actor is found.

Starting a Ray worker process for an actor takes 0.5-3 s on a small machine, so
agents are not given a fresh actor when they are first called. One cluster-wide
``AgentPool`` actor (``agent-pool``, detached, restarted by Ray if it dies)
keeps ``agent_pool_size`` blank ``AgentActor`` processes started and imported,
and replenishes them in the background. Activating an agent takes one of them
and binds it to the agent's id (one actor call with the agent's row); the
binding ``agent id -> actor name`` is claimed in Redis with ``SET NX``, so every
replica and node task finds the same actor and exactly one actor serves an
agent at a time (its concurrency and rate limits therefore hold cluster-wide).

- A call resolves the agent through a per-process cache, then the Redis binding
  (a ``GET`` and a named-actor lookup), and only then asks the pool to activate.
- A binding whose actor died (killed, its node lost) is stale: the caller tells
  the pool, which deletes it only if it still names that actor, makes sure the
  old actor is gone, and binds a fresh one. The call is retried on it.
- Residency stays bounded: bound agents are kept in a Redis sorted set by last
  use (``troupe.actors.residency``); an activation past ``max_resident_agents``
  asks the least recently used idle agents to leave. An agent idle for
  ``actor_idle_timeout`` leaves by itself. A leaving actor hands back its rate
  windows and either waits blank in the pool again (no new process needed) or
  exits when the pool is full.
- Agent actors do no database or Redis work on a call's path: they hand their
  ``agent:activity`` events and performance-counter deltas to the pool in the
  background; the pool publishes the events and adds the deltas to
  ``agents.performance`` in SQL, in batches.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

import ray
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError

from troupe.actors import handles
from troupe.actors.agent import AgentActor, NotBound
from troupe.engine.contract import NodeResult

# Ray imports an actor's class module in every process that gets a handle to it, agent
# actors included (they hand their events to the pool), and their memory is budgeted: so
# this module imports settings, Redis and the database only where it uses them.

log = logging.getLogger(__name__)

SLOT_PREFIX = "agent-slot:"
# Blank actors the pool starts at once (Ray starts workers about two at a time on two cores).
START_PARALLEL = 4
# How long an agent asked to leave is counted on to bring its actor back to the pool.
RETURN_WAIT_S = 30.0
ENFORCE_S = 2.0
_DEAD = (ActorDiedError, ActorUnavailableError, RayActorError)
# KEYS: binding; ARGV: actor name. Deletes the binding only if it still names that actor.
_DELETE_IF = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"
# ``agents.performance`` plus one batch of deltas, computed in SQL (the old values are the row's).
_ADD_PERF = """
UPDATE agents SET last_used_at = CAST(:at AS timestamptz),
performance = coalesce(performance, '{}'::jsonb) || jsonb_build_object(
  'totalRequests', coalesce((performance->>'totalRequests')::bigint, 0) + CAST(:n AS bigint),
  'successfulRequests', coalesce((performance->>'successfulRequests')::bigint, 0) + CAST(:ok AS bigint),
  'failedRequests', coalesce((performance->>'failedRequests')::bigint, 0) + CAST(:failed AS bigint),
  'totalTokensUsed', coalesce((performance->>'totalTokensUsed')::bigint, 0) + CAST(:tokens AS bigint),
  'totalCost', round(coalesce((performance->>'totalCost')::numeric, 0) + CAST(:cost AS numeric), 6),
  'averageResponseTime', round((coalesce((performance->>'averageResponseTime')::numeric, 0)
      * coalesce((performance->>'totalRequests')::bigint, 0) + CAST(:ms AS numeric))
      / (coalesce((performance->>'totalRequests')::bigint, 0) + CAST(:n AS bigint)), 3),
  'successRate', round((coalesce((performance->>'successfulRequests')::bigint, 0) + CAST(:ok AS bigint))::numeric
      / (coalesce((performance->>'totalRequests')::bigint, 0) + CAST(:n AS bigint)), 4),
  'errorRate', round((coalesce((performance->>'failedRequests')::bigint, 0) + CAST(:failed AS bigint))::numeric
      / (coalesce((performance->>'totalRequests')::bigint, 0) + CAST(:n AS bigint)), 4),
  'lastUpdated', CAST(:at_iso AS text))
WHERE id = CAST(:id AS uuid)
"""


def get_redis() -> Any:
    from troupe.infra.redis import get_redis as client

    return client()


def binding_key(agent_id: str) -> str:
    from troupe.infra.redis import rkey

    return rkey("engine", "agent", "binding", agent_id)


def windows_key(agent_id: str) -> str:
    from troupe.infra.redis import rkey

    return rkey("engine", "agent", "windows", agent_id)


def agent_state(row: Any) -> dict[str, Any]:
    """The fields of an ``agents`` row that its actor needs to serve calls."""
    return {"model": row.model, "provider": row.provider, "config": dict(row.configuration or {}),
            "company_id": str(row.company_id) if row.company_id else None, "status": row.status}


def _actor(slot: str) -> Any | None:
    try:
        return ray.get_actor(slot, namespace=handles.NAMESPACE)
    except ValueError:  # no live actor of that name
        return None


async def _find(slot: str) -> Any | None:
    """``_actor`` from async code: the name lookup is a blocking GCS call, and a blocked
    event loop would stall every other request's Redis and database I/O past its timeout."""
    return await asyncio.to_thread(_actor, slot)


@ray.remote
class AgentPool:
    def __init__(self) -> None:
        from troupe.config import get_settings
        from troupe.db.session import set_pool

        set_pool("none")  # a few batched writes and row loads: no idle connections held
        settings = get_settings()
        self.target = max(0, settings.agent_pool_size)
        self.idle_timeout_s = settings.actor_idle_timeout.total_seconds()
        self.keepalive_s = min(10.0, max(1.0, self.idle_timeout_s / 4))
        self.blank: deque[tuple[str, Any]] = deque()
        self.starting = 0
        self.waiting = 0
        # Agents asked to leave by the residency bound (when they were asked): their actors are
        # expected back blank, so the pool does not start processes to replace what they refill.
        self.returning: dict[str, float] = {}
        self.ready = asyncio.Event()
        self.locks: dict[str, tuple[asyncio.Lock, int]] = {}
        self.bound: dict[str, tuple[str, int]] = {}  # agent id -> (actor name, pid), what this pool bound
        self.pids: dict[str, int] = {}
        self.perf: dict[str, dict[str, float]] = {}
        self.flush_wake = asyncio.Event()
        self.tasks: list[asyncio.Task[None]] = []
        self.activations = 0
        self.started_actors = 0
        self.took_waiting = 0  # blank actors taken only after waiting for one to start
        self.waited_s = 0.0

    def _ensure_started(self) -> None:
        if not self.tasks:
            loop = asyncio.get_running_loop()
            self.tasks = [loop.create_task(self._replenish()), loop.create_task(self._keepalive()),
                          loop.create_task(self._flush_perf()), loop.create_task(self._enforce())]

    async def start(self) -> dict[str, Any]:
        """Idempotent: makes sure the pool is filling (each API replica calls it at start-up)."""
        self._ensure_started()
        return await self.stats()

    async def stats(self) -> dict[str, Any]:
        return {"target": self.target, "blank": len(self.blank), "starting": self.starting,
                "blankPids": [self.pids.get(slot, 0) for slot, _ in self.blank],
                "bound": {aid: {"slot": slot, "pid": pid} for aid, (slot, pid) in self.bound.items()},
                "activations": self.activations, "startedActors": self.started_actors,
                "tookWaiting": self.took_waiting, "waitedSeconds": round(self.waited_s, 3)}

    # ------------------------------------------------------------ blank actors
    async def _replenish(self) -> None:
        while True:
            try:
                now = time.monotonic()
                for agent_id, asked in list(self.returning.items()):
                    if now - asked > RETURN_WAIT_S:  # busy, or died on the way: stop counting on it
                        del self.returning[agent_id]
                want = self.target + self.waiting - len(self.blank) - self.starting - len(self.returning)
                for _ in range(max(0, min(want, START_PARALLEL - self.starting))):
                    self.starting += 1
                    asyncio.get_running_loop().create_task(self._start_one())
            except Exception:
                log.exception("agent pool: replenishing failed")
            await asyncio.sleep(0.05 if self.waiting else 0.25)

    async def _start_one(self) -> None:
        slot = f"{SLOT_PREFIX}{uuid.uuid4().hex[:16]}"
        try:
            # Creating a named actor registers its name with the GCS synchronously: off the loop.
            actor = await asyncio.to_thread(
                lambda: AgentActor.options(name=slot, namespace=handles.NAMESPACE, lifetime="detached", num_cpus=0,
                                           max_concurrency=1000, max_restarts=0).remote(
                    slot, self.idle_timeout_s, self.keepalive_s))
            self.pids[slot] = await actor.keep.remote()
            self.started_actors += 1
            self.blank.append((slot, actor))
            self.ready.set()
        except Exception:
            log.exception("agent pool: could not start a blank agent actor")
            await asyncio.sleep(1.0)  # do not spin on a broken cluster
        finally:
            self.starting -= 1

    async def _keepalive(self) -> None:
        """Blank actors exit by themselves when no pool keeps them (a lost pool leaks nothing).
        Blank actors beyond the pool's size (a burst's late starters) are let go."""
        while True:
            await asyncio.sleep(self.keepalive_s)
            while len(self.blank) > self.target and not self.waiting:
                slot, actor = self.blank.pop()
                self.pids.pop(slot, None)
                ray.kill(actor, no_restart=True)
            for slot, actor in list(self.blank):
                try:
                    await actor.keep.remote()
                except _DEAD:
                    if (slot, actor) in self.blank:
                        self.blank.remove((slot, actor))
                    self.pids.pop(slot, None)

    async def _take(self, deadline: float) -> tuple[str, Any]:
        if self.blank:
            return self.blank.popleft()
        self.waiting += 1
        started = time.monotonic()
        try:
            while not self.blank:
                self.ready.clear()
                await asyncio.wait_for(self.ready.wait(), timeout=max(0.01, deadline - time.monotonic()))
            return self.blank.popleft()
        finally:
            self.waiting -= 1
            self.took_waiting += 1
            self.waited_s += time.monotonic() - started

    # ------------------------------------------------------------ bindings
    @contextlib.asynccontextmanager
    async def _agent_lock(self, agent_id: str) -> AsyncIterator[None]:
        """Activations and releases of one agent take turns in this pool (the Redis claim
        still decides between pool instances). Dropped when nobody holds or waits for it."""
        lock, users = self.locks.get(agent_id, (asyncio.Lock(), 0))
        self.locks[agent_id] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self.locks[agent_id]
            if users <= 1:
                del self.locks[agent_id]
            else:
                self.locks[agent_id] = (lock, users - 1)

    async def activate(self, agent_id: str, agent: dict[str, Any] | None = None, stale: str | None = None,
                       timeout_s: float = 60.0) -> str:
        """The name of the actor serving ``agent_id``, binding a blank one if none does.
        ``stale``: an actor name the caller found dead or not serving this agent."""
        self._ensure_started()
        deadline = time.monotonic() + timeout_s
        async with self._agent_lock(agent_id):
            redis = get_redis()
            key = binding_key(agent_id)
            current = await redis.get(key)
            if current is not None:
                if await self._serves(current, agent_id, suspect=current == stale):
                    return current
                await redis.eval(_DELETE_IF, 1, key, current)
                self.bound.pop(agent_id, None)
            return await self._bind(agent_id, agent, deadline)

    async def _serves(self, slot: str, agent_id: str, *, suspect: bool) -> bool:
        """Whether ``slot`` is alive and serving ``agent_id``. A suspect actor (a caller failed
        on it) is asked; one that does not answer is killed, so two actors never serve one agent."""
        actor = await _find(slot)
        if actor is None:
            return False
        if not suspect:
            return True
        try:
            await asyncio.wait_for(actor.state.remote(agent_id), timeout=5)
            return True
        except NotBound:
            return False
        except (TimeoutError, *_DEAD):
            ray.kill(actor, no_restart=True)
            return False

    async def _bind(self, agent_id: str, agent: dict[str, Any] | None, deadline: float) -> str:
        if agent is None:
            agent = await _load_agent(agent_id)
        redis = get_redis()
        saved = await redis.get(windows_key(agent_id))
        windows = json.loads(saved) if saved else {}
        while True:
            slot, actor = await self._take(deadline)
            try:
                pid = await actor.bind.remote(agent_id, agent, windows)
            except _DEAD:
                self.pids.pop(slot, None)
                continue  # died while blank: take the next one
            if await redis.set(binding_key(agent_id), slot, nx=True):
                break
            # Another pool instance bound it meanwhile (only while a lost pool is replaced):
            # use that binding and put this actor back.
            await actor.unbind.remote()
            self.blank.append((slot, actor))
            self.ready.set()
            return str(await redis.get(binding_key(agent_id)))
        self.bound[agent_id] = (slot, pid)
        self.activations += 1
        asyncio.get_running_loop().create_task(self._register(agent_id))
        return slot

    async def _register(self, agent_id: str) -> None:
        """Residency bound, off the activation's path: ask the least recently used to leave.
        A failure here (Redis slow or down) is repaired by ``_enforce``."""
        from troupe.actors import residency

        try:
            await self._evict(await residency.register_agent(agent_id))
        except Exception:
            log.warning("agent pool: residency bookkeeping for %s deferred", agent_id, exc_info=True)

    async def _evict(self, agent_ids: list[str]) -> None:
        from troupe.actors import residency

        for other in agent_ids:
            if other in self.returning:
                continue  # already asked
            slot = await get_redis().get(binding_key(other))
            actor = await _find(slot) if slot else None
            if actor is None:  # its actor died: nothing resident to count
                await residency.unregister_agent(other)
                if self.bound.get(other, ("",))[0] in (slot, ""):
                    self.bound.pop(other, None)
            else:
                try:
                    leaves = await actor.evict.remote(other)
                except RayActorError:  # it left (or died) as we asked
                    leaves = True
                if leaves:
                    self.returning[other] = time.monotonic()

    async def _enforce(self) -> None:
        """Every few seconds: every agent this pool bound is counted, and the residents past
        the bound are asked to leave (again: a busy one refuses, a registration can fail)."""
        from troupe.actors import residency

        while True:
            await asyncio.sleep(ENFORCE_S)
            try:
                await residency.register_agents(list(self.bound))
                await self._evict(await residency.over_bound())
            except Exception:
                log.warning("agent pool: enforcing the residency bound failed; retrying", exc_info=True)

    async def release(self, agent_id: str, slot: str, windows: dict[str, list[float]], lean: bool) -> bool:
        """An agent's actor leaves it (idle or evicted). Answers whether the actor should
        wait blank in the pool (True) or exit."""
        from troupe.actors import residency

        self.returning.pop(agent_id, None)
        async with self._agent_lock(agent_id):
            redis = get_redis()
            if await redis.get(binding_key(agent_id)) in (slot, None):
                # Residency first: once the binding is gone, so is the agent's residency.
                await residency.unregister_agent(agent_id)
                await redis.eval(_DELETE_IF, 1, binding_key(agent_id), slot)
            if any(windows.values()):
                await redis.set(windows_key(agent_id), json.dumps(windows), ex=61)
            if self.bound.get(agent_id, ("",))[0] == slot:
                del self.bound[agent_id]
        keep = lean and len(self.blank) + self.starting < self.target + self.waiting
        if keep:
            actor = await _find(slot)
            if actor is None:
                return False
            self.blank.append((slot, actor))
            self.ready.set()
        else:
            self.pids.pop(slot, None)
        return keep

    # ------------------------------------------------------------ events and counters
    async def record(self, agent_id: str, company_id: str | None,
                     events: list[tuple[str, dict[str, Any], list[str], str | None]],
                     perf: dict[str, float] | None, last_used_at: float) -> None:
        """What an agent actor queued: ``agent:activity`` events (published now, in order,
        to the rooms the actor chose: the caller's) and counter deltas (added to the row
        by the flusher, batched)."""
        self._ensure_started()
        if perf:
            pending = self.perf.setdefault(agent_id, {"requests": 0, "successes": 0, "failures": 0, "tokens": 0,
                                                      "cost": 0.0, "ms": 0.0, "at": 0.0})
            for name, value in perf.items():
                pending[name] += value
            pending["at"] = max(pending["at"], last_used_at)
            self.flush_wake.set()
        if events:
            from troupe.events import publish

            for activity, details, rooms, caller in events:
                try:
                    await publish(rooms, "agent:activity", {"agentId": agent_id, "activity": activity,
                                                            "details": details}, company_id=caller)
                except Exception:  # events are best effort; counters and calls do not depend on them
                    log.warning("agent pool: could not publish agent:activity for %s", agent_id)
                    break

    async def _flush_perf(self) -> None:
        from datetime import UTC, datetime

        from sqlalchemy import text

        from troupe.actors import residency
        from troupe.db.session import session_scope
        from troupe.timeutil import iso

        while True:
            await self.flush_wake.wait()
            self.flush_wake.clear()
            batch, self.perf = self.perf, {}
            if not batch:
                continue
            rows = []
            for agent_id, d in batch.items():
                at = datetime.fromtimestamp(d["at"] or time.time(), UTC)
                rows.append({"id": uuid.UUID(agent_id), "n": int(d["requests"]), "ok": int(d["successes"]),
                             "failed": int(d["failures"]), "tokens": int(d["tokens"]), "cost": d["cost"],
                             "ms": d["ms"], "at": at, "at_iso": iso(at)})
            try:
                async with session_scope() as session:
                    await session.execute(text(_ADD_PERF), rows)
                redis = get_redis()
                async with redis.pipeline(transaction=False) as pipe:
                    for agent_id, d in batch.items():
                        pipe.zadd(residency.resident_key(), {agent_id: d["at"]}, xx=True)
                    await pipe.execute()
            except Exception:
                log.exception("agent pool: writing performance counters failed; retrying")
                for agent_id, d in batch.items():  # merge back: nothing is lost or counted twice
                    pending = self.perf.setdefault(agent_id, dict.fromkeys(d, 0))
                    for name, value in d.items():
                        pending[name] = max(pending[name], value) if name == "at" else pending[name] + value
                await asyncio.sleep(1.0)
                self.flush_wake.set()


async def _load_agent(agent_id: str) -> dict[str, Any]:
    from troupe.db import models
    from troupe.db.session import session_scope

    async with session_scope() as session:
        row = await session.get(models.Agent, uuid.UUID(agent_id))
        if row is None:
            raise LookupError(f"agent {agent_id} not found")
        return agent_state(row)


# ---------------------------------------------------------------- callers (API replicas, node tasks)
# agent id -> (actor name, handle), per process: the warm path is one actor call.
_bound: dict[str, tuple[str, Any]] = {}


def pool() -> Any:
    return handles.handle(handles.AGENT_POOL)


async def ensure_pool() -> dict[str, Any]:
    """Start (or find) the cluster's agent pool and let it fill."""
    return await handles.call(handles.AGENT_POOL, "start")


async def _resolve(agent_id: str, agent: dict[str, Any] | None, stale: str | None) -> tuple[str, Any]:
    cached = _bound.get(agent_id)
    if cached is not None and cached[0] != stale:
        return cached
    slot = None if stale else await get_redis().get(binding_key(agent_id))
    actor = await _find(slot) if slot else None
    if actor is None:
        slot = await handles.call(handles.AGENT_POOL, "activate", agent_id, agent, stale or slot)
        actor = await _find(slot)
        if actor is None:
            raise ActorDiedError()
    _bound[agent_id] = (slot, actor)
    return slot, actor


def _missing(method: str, exc: LookupError) -> NodeResult:
    # A node or test naming a deleted agent fails like any node would, without a retry.
    if method != "complete":
        raise exc
    return NodeResult.fail("RES_001", "Agent not found", retryable=False)


async def call(agent_id: str, method: str, *args: Any, agent: dict[str, Any] | None = None) -> Any:
    """Call ``method(agent_id, *args)`` on the actor serving ``agent_id``, activating it if
    needed (``agent``: its row's state, when the caller has it, saves the pool a query).
    A dead or re-bound actor is replaced and the call retried."""
    stale: str | None = None
    for attempt in range(3):
        slot = stale
        try:
            slot, actor = await _resolve(agent_id, agent, stale)
            return await getattr(actor, method).remote(agent_id, *args)
        except LookupError as exc:
            return _missing(method, exc)
        except (NotBound, *_DEAD):
            _bound.pop(agent_id, None)
            if attempt == 2:
                raise
            stale = slot
    raise AssertionError("unreachable")


def call_sync(agent_id: str, method: str, *args: Any, timeout: float | None = None) -> Any:
    """``call`` from synchronous code (a node task): the pool resolves the binding."""
    stale: str | None = None
    for attempt in range(3):
        cached = _bound.get(agent_id)
        slot = cached[0] if cached else None
        try:
            if cached is None or slot == stale:
                slot = handles.call_sync(handles.AGENT_POOL, "activate", agent_id, None, stale, timeout=timeout)
                actor = _actor(slot)
                if actor is None:
                    raise ActorDiedError()
                _bound[agent_id] = (slot, actor)
            else:
                actor = cached[1]
            return ray.get(getattr(actor, method).remote(agent_id, *args), timeout=timeout)
        except LookupError as exc:
            return _missing(method, exc)
        except (NotBound, *_DEAD):
            _bound.pop(agent_id, None)
            if attempt == 2:
                raise
            stale = slot
    raise AssertionError("unreachable")


async def complete(agent_id: str, request: dict[str, Any], *, agent: dict[str, Any] | None = None) -> NodeResult:
    """One model call through the agent's actor."""
    return await call(agent_id, "complete", request, agent=agent)


def complete_sync(agent_id: str, request: dict[str, Any], *, timeout: float | None = None) -> NodeResult:
    return call_sync(agent_id, "complete", request, timeout=timeout)


async def reload(agent_id: str, agent: dict[str, Any]) -> None:
    """Give a resident agent its changed row; a non-resident one reads it when activated."""
    slot = await get_redis().get(binding_key(agent_id))
    actor = await _find(slot) if slot else None
    if actor is None:
        return
    try:
        await actor.reload.remote(agent_id, agent)
    except (NotBound, *_DEAD):
        pass  # left meanwhile: its next activation reads the row


async def bound_actor(agent_id: str) -> tuple[str, Any] | None:
    """The actor serving ``agent_id`` now, if any (tests and benchmarks find it here)."""
    slot = await get_redis().get(binding_key(agent_id))
    actor = await _find(slot) if slot else None
    return (slot, actor) if actor is not None else None


def pool_stats() -> dict[str, Any]:
    return ray.get(pool().stats.remote())


__all__ = ["AgentPool", "agent_state", "bound_actor", "call", "call_sync", "complete", "complete_sync",
           "ensure_pool", "pool_stats", "reload"]
