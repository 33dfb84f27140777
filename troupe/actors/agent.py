"""AgentActor: a warm actor process that serves one agent at a time.

Actors are started blank by the agent pool (``troupe.actors.pool``), so their
Ray worker process and imports are paid before anyone needs them. Activating an
agent binds a blank actor to the agent's id (``bind``); the binding is recorded
in Redis by the pool, so every replica and node task reaches the same actor and
the agent's limits hold cluster-wide:

- ``configuration.maxConcurrency`` (default 4) concurrent calls;
- ``configuration.rateLimit`` (``requestsPerMinute``, ``tokensPerMinute``): one
  minute sliding windows kept here (only one actor serves an agent at a time, so
  its count is the cluster's), handed back to the pool when the agent leaves and
  given to its next activation;
- conversation memory (the last ``memorySize`` exchanges, default 10, trimmed to
  ``contextWindow`` tokens), kept per calling company and conversation (the
  request's ``conversationId``, else its ``taskId``): a public agent serves many
  tenants, and none of them may read another's exchanges. A call with neither
  has no memory. At most ``MAX_CONVERSATIONS`` are kept, least recently used first out.

Activity events (``agent:activity``, with the caller's input and output) go to the
caller's rooms only: its company's and its task's. Not to the agent's room, which
everyone may join once the agent is public, nor to the owning company's: the
publisher of a public agent sees other tenants' use only as the aggregate
performance counters (``GET /api/agents/:id/performance``).

Nothing on a call's path waits for Postgres or Redis: ``agent:activity`` events
and performance-counter deltas are queued and handed to the pool in the
background, which publishes the events and writes the counters in batches.

This module is imported by every agent actor process, whose memory is budgeted
(≤ 60 MiB USS): it must not import SQLAlchemy, pydantic (``troupe.config``),
the database models, the engine's node code or a provider SDK. Real providers
are imported when an agent of theirs is first called.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections import OrderedDict, deque
from typing import Any

import ray

from troupe.actors import agent_loop
from troupe.actors.handles import AGENT_POOL, NAMESPACE
from troupe.engine.contract import NodeResult
from troupe.providers.base import ChatMessage, CompletionRequest, ProviderError
from troupe.providers.simulated import SimulatedProvider, count_tokens

DEFAULT_CONCURRENCY = 4
DEFAULT_MEMORY = 10
MAX_CONVERSATIONS = 256
RATE_WINDOW_S = 60.0
# How often an idle actor checks its idle timeout and whether the pool still keeps it
# (hundreds of resident actors share two cores: they should not wake often for nothing).
TICK_S = 5.0
# How long a leaving actor outlives its last replies before it kills itself.
LEAVE_GRACE_S = 0.5


class NotBound(Exception):
    """This actor does not serve the agent asked for (it left, or serves another
    agent since): the caller resolves the agent's binding again."""


def provider_for(name: str, config: dict[str, Any] | None = None) -> Any:
    """The agent's provider, with its own apiKey (sealed), baseUrl or endpoint when set."""
    if name == "simulated":
        return SimulatedProvider()
    from troupe.providers.registry import get_provider  # the real SDK clients: imported only when used

    return get_provider(name, config=config)


class _Perf:
    """Counter deltas since the last hand-off to the pool (the pool adds them in SQL,
    so concurrent writers and restarts never lose or double a count)."""

    __slots__ = ("requests", "successes", "failures", "tokens", "cost", "ms")

    def __init__(self) -> None:
        self.requests = self.successes = self.failures = self.tokens = 0
        self.cost = self.ms = 0.0

    def add(self, ok: bool, seconds: float, tokens: int, cost: float) -> None:
        self.requests += 1
        self.successes += 1 if ok else 0
        self.failures += 0 if ok else 1
        self.tokens += tokens
        self.cost += cost
        self.ms += seconds * 1000

    def as_dict(self) -> dict[str, float]:
        return {"requests": self.requests, "successes": self.successes, "failures": self.failures,
                "tokens": self.tokens, "cost": self.cost, "ms": self.ms}


@ray.remote
class AgentActor:
    def __init__(self, slot: str, idle_timeout_s: float, keepalive_s: float) -> None:
        self.slot = slot
        self.idle_timeout_s = idle_timeout_s
        # A blank actor that the pool stopped keeping (the pool was lost) leaves by itself.
        self.orphan_after_s = max(3 * keepalive_s, 30.0)
        self.agent_id: str | None = None
        self.agent: dict[str, Any] = {}
        self.semaphore = asyncio.Semaphore(DEFAULT_CONCURRENCY)
        self.active = 0
        self.leaving = False
        # (calling company, conversation) -> the last exchanges, least recently used first.
        self.memory: OrderedDict[tuple[str, str], deque[tuple[str, str]]] = OrderedDict()
        self.windows: dict[str, deque[float]] = {}
        self.knowledge_checked = 0.0
        self.perf = _Perf()
        # (activity, details, rooms, calling company): published by the pool.
        self.events: list[tuple[str, dict[str, Any], list[str], str | None]] = []
        self.last_used = time.monotonic()
        self.last_used_at = time.time()
        self.kept_at = time.monotonic()
        self.pool: Any = None  # the pool's handle, found by name once (Ray restarts the pool under it)
        self.wake: asyncio.Event | None = None
        self.loop_task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------ pool side
    def _pool(self) -> Any:
        if self.pool is None:
            self.pool = ray.get_actor(AGENT_POOL, namespace=NAMESPACE)
        return self.pool

    def _ensure_loop(self) -> None:
        if self.loop_task is None:
            self.wake = asyncio.Event()
            self.loop_task = asyncio.get_running_loop().create_task(self._run())

    async def keep(self) -> int:
        """The pool's keep-alive for a blank actor; answers the process id."""
        self._ensure_loop()
        self.kept_at = time.monotonic()
        return os.getpid()

    async def bind(self, agent_id: str, agent: dict[str, Any], windows: dict[str, list[float]]) -> int:
        """Serve ``agent_id`` from now on (``agent``: the fields of its row that calls need)."""
        self._ensure_loop()
        if self.agent_id is not None and self.agent_id != agent_id:
            raise RuntimeError(f"{self.slot} already serves agent {self.agent_id}")
        self.agent_id, self.leaving = agent_id, False
        self._configure(agent)
        self.windows = {key: deque(stamps) for key, stamps in windows.items()}
        self.last_used, self.last_used_at = time.monotonic(), time.time()
        return os.getpid()

    async def unbind(self) -> None:
        """Back to blank without having served (the pool lost a race for the binding)."""
        self._reset()

    def _configure(self, agent: dict[str, Any]) -> None:
        self.agent = agent
        limit = max(1, int(agent["config"].get("maxConcurrency") or DEFAULT_CONCURRENCY))
        # Calls in flight release the semaphore they acquired; new calls see the new limit.
        self.semaphore = asyncio.Semaphore(limit)

    def _reset(self) -> None:
        self.agent_id, self.agent, self.leaving = None, {}, False
        self.memory.clear()
        self.windows = {}
        self.semaphore = asyncio.Semaphore(DEFAULT_CONCURRENCY)
        self.kept_at = time.monotonic()

    def _check(self, agent_id: str) -> None:
        if self.agent_id != agent_id or self.leaving:
            raise NotBound(f"{self.slot} does not serve agent {agent_id}")

    async def state(self, agent_id: str) -> dict[str, Any]:
        self._check(agent_id)
        return {"agentId": self.agent_id, "slot": self.slot, "pid": os.getpid(), "active": self.active,
                "limit": self.agent["config"].get("maxConcurrency") or DEFAULT_CONCURRENCY}

    async def reload(self, agent_id: str, agent: dict[str, Any]) -> None:
        """The agent's row changed (e.g. trained): use the new configuration, keep memory."""
        self._check(agent_id)
        self._configure(agent)

    async def evict(self, agent_id: str) -> bool:
        """Asked by the residency bound; leaves only when idle. True if it leaves."""
        if self.agent_id != agent_id or self.leaving or self.active:
            return False
        self.leaving = True
        asyncio.get_running_loop().create_task(self._leave())
        return True

    async def _leave(self) -> None:
        """Hand the agent back to the pool (final counters, rate windows), then either
        wait blank for the next agent or exit, as the pool says."""
        self.leaving = True
        agent_id = self.agent_id
        await self._flush()
        now = time.time()
        windows = {key: [t for t in stamps if t > now - RATE_WINDOW_S] for key, stamps in self.windows.items()}
        # Blank before the pool hears of it: the pool may hand this actor to another agent at once.
        self._reset()
        try:
            pool = self._pool()
            # A process that imported a real provider's SDK (or psycopg) is heavier: it exits rather than waits.
            lean = not any(m in sys.modules for m in ("troupe.providers.registry", "troupe.actors.agent_db"))
            keep = bool(await pool.release.remote(agent_id, self.slot, windows, lean))
        except Exception:  # the pool is gone: its successor finds the binding stale and re-binds
            self.pool, keep = None, False
        if not keep:
            # Let the reply to ``evict`` (sent as this task started) reach its caller first:
            # a self-kill in flight with it turns the caller's True into an ActorDiedError.
            await asyncio.sleep(LEAVE_GRACE_S)
            ray.kill(ray.get_runtime_context().current_actor, no_restart=True)

    async def _run(self) -> None:
        """Background: hand queued events and counters to the pool, leave when idle."""
        assert self.wake is not None
        while True:
            try:
                await asyncio.wait_for(self.wake.wait(), timeout=TICK_S)
            except TimeoutError:
                pass
            self.wake.clear()
            await self._flush()
            if self.agent_id is None:
                if time.monotonic() - self.kept_at > self.orphan_after_s:
                    ray.kill(ray.get_runtime_context().current_actor, no_restart=True)
            elif (not self.leaving and self.active == 0
                  and time.monotonic() - self.last_used >= self.idle_timeout_s):
                await self._leave()

    async def _flush(self) -> None:
        if not self.agent_id or (not self.events and not self.perf.requests):
            return
        events, perf = self.events, self.perf
        self.events, self.perf = [], _Perf()
        try:
            await self._pool().record.remote(self.agent_id, self.agent.get("company_id"), events,
                                     perf.as_dict() if perf.requests else None, self.last_used_at)
        except Exception:
            # Keep the counters for the next attempt; events are best effort (as before).
            self.pool = None
            self.perf.requests += perf.requests
            self.perf.successes += perf.successes
            self.perf.failures += perf.failures
            self.perf.tokens += perf.tokens
            self.perf.cost += perf.cost
            self.perf.ms += perf.ms

    # ------------------------------------------------------------ calls
    def _rooms(self, caller: str | None, task_id: str | None) -> list[str]:
        """Where a call's activity goes: the caller's rooms only (module docstring)."""
        rooms = [f"company:{caller}"] if caller else []
        if task_id:
            rooms.append(f"task:{task_id}")
        return rooms

    def _activity(self, activity: str, details: dict[str, Any], rooms: list[str], caller: str | None) -> None:
        if not rooms:
            return
        self.events.append((activity, {k: v for k, v in details.items() if v is not None}, rooms, caller))
        if self.wake is not None:
            self.wake.set()

    def _record(self, ok: bool, seconds: float, tokens: int, cost: float) -> None:
        self.perf.add(ok, seconds, tokens, cost)
        if self.wake is not None:
            self.wake.set()

    async def _wait_rate(self, key: str, limit: int, deadline: float, weight: int = 1) -> None:
        window = self.windows.setdefault(key, deque())
        for _ in range(max(1, weight)):
            while True:
                now = time.time()
                while window and window[0] <= now - RATE_WINDOW_S:
                    window.popleft()
                if len(window) < limit:
                    window.append(now)
                    break
                wait = window[0] + RATE_WINDOW_S - now
                if time.monotonic() + wait > deadline:
                    raise ProviderError("SYS_004", f"agent {key} rate limit: waiting would exceed the timeout")
                await asyncio.sleep(min(wait, 1.0))

    def _conversation(self, key: tuple[str, str] | None) -> deque[tuple[str, str]]:
        if key is None:
            return deque()
        memory = self.memory.pop(key, None) or deque()
        self.memory[key] = memory
        while len(self.memory) > MAX_CONVERSATIONS:
            self.memory.popitem(last=False)
        return memory

    @staticmethod
    def _history(memory: deque[tuple[str, str]], window: int) -> list[ChatMessage]:
        messages: list[ChatMessage] = []
        budget = window
        for user_text, reply in reversed(memory):
            cost = count_tokens(user_text) + count_tokens(reply)
            if cost > budget:
                break
            budget -= cost
            messages[:0] = [ChatMessage("user", user_text), ChatMessage("assistant", reply)]
        return messages

    async def _knowledge(self, agent_id: str, config: dict[str, Any], prompt: str) -> list[dict[str, str]]:
        """The best chunks of the agent's indexed sources for this prompt (knowledgeBase on)."""
        if not (config.get("knowledgeBase") or {}).get("enabled"):
            return []
        from troupe.actors import agent_db  # psycopg: only agents with knowledge or tools load it

        try:
            chunks = await agent_db.best_chunks(agent_id, prompt, limit=agent_loop.KNOWLEDGE_CHUNKS)
            # URL sources older than updateFrequency are fetched again in the background
            # (checked at most once a minute; this call uses what is indexed now).
            age = agent_loop.REFRESH_AFTER_S.get(str(config["knowledgeBase"].get("updateFrequency") or "daily"))
            if age and time.monotonic() - self.knowledge_checked >= 60:
                self.knowledge_checked = time.monotonic()
                if await agent_db.urls_older_than(agent_id, age):
                    agent_db.refresh_knowledge.remote(agent_id)
            return chunks
        except Exception as exc:
            raise ProviderError("SYS_002", f"knowledge search failed: {exc}") from exc

    async def _tools(self, config: dict[str, Any], company_id: str | None, user_id: str | None,
                     only: list[str] | None = None) -> list[agent_loop.AgentTool]:
        """The agent's tools the caller may use (see agent_db.usable_tools), as functions;
        ``only``: a subset the caller asked for (ids that are not the agent's are ignored)."""
        ids = [str(t) for t in config.get("tools") or [] if only is None or str(t) in {str(o) for o in only}]
        if not ids:
            return []
        from troupe.actors import agent_db
        from troupe.engine.contract import ToolSpec

        try:
            rows = await agent_db.usable_tools(ids, company_id=company_id, user_id=user_id)
        except Exception as exc:
            raise ProviderError("SYS_002", f"loading the agent's tools failed: {exc}") from exc
        taken: set[str] = set()
        return [agent_loop.AgentTool(
            name=agent_loop.function_name(name, tid, taken), description=(description or name)[:1024],
            parameters=agent_loop.parameters_of(kind, schema),
            spec=ToolSpec(id=tid, type=kind, configuration=configuration, schema=schema))
            for tid, name, description, kind, configuration, schema in rows]

    def _tool_runner(self, company_id: str | None, user_id: str | None, task_id: str | None,
                     deadline: float) -> agent_loop.ToolRunner:
        async def run(tool: agent_loop.AgentTool, arguments: dict[str, Any], key: str) -> tuple[bool, Any]:
            # The tool runtimes (engine code) load only when a model first calls a tool.
            from troupe.engine.tools import ToolContext, arun_tool

            context = ToolContext(company_id=company_id, user_id=user_id, agent_id=self.agent_id,
                                  task_id=task_id, idempotency_key=key)
            try:
                result = await asyncio.wait_for(arun_tool(tool.spec, arguments, context=context),
                                                timeout=max(0.1, deadline - time.monotonic()))
            except TimeoutError:
                return False, "the tool did not answer before the call's deadline"
            return (True, result.output) if result.ok else (False, f"{result.code}: {result.message}")

        return run

    async def complete(self, agent_id: str, request: dict[str, Any]) -> NodeResult:
        """One call through the agent loop (troupe.actors.agent_loop) for a node or a test."""
        self._check(agent_id)
        self.last_used, self.last_used_at = time.monotonic(), time.time()
        started = time.monotonic()
        deadline = started + float(request.get("timeout") or 300)
        agent, semaphore = self.agent, self.semaphore
        config = agent["config"]
        task_id = request.get("taskId")
        caller = str(request["companyId"]) if request.get("companyId") else None
        conversation = request.get("conversationId") or task_id
        key = (caller or "-", str(conversation)) if conversation else None
        rooms = self._rooms(caller, task_id)
        try:
            await asyncio.wait_for(semaphore.acquire(), timeout=max(0.01, deadline - time.monotonic()))
        except TimeoutError:
            return NodeResult.fail("SYS_006", "timed out waiting for the agent's concurrency limit")
        self.active += 1
        self._activity("started", {"taskId": task_id, "input": str(request.get("prompt"))[:500]}, rooms, caller)
        try:
            rate = config.get("rateLimit") or {}
            if rate.get("requestsPerMinute"):
                await self._wait_rate("requests", int(rate["requestsPerMinute"]), deadline)
            window = int(config.get("contextWindow") or 8192)
            prompt = str(request.get("prompt", ""))
            messages = agent_loop.build_messages(
                config=config, system=request.get("system") or config.get("systemPrompt"), prompt=prompt,
                history=self._history(self._conversation(key), window // 2),
                knowledge=await self._knowledge(agent_id, config, prompt))
            prompt_tokens = sum(count_tokens(m.content) for m in messages)
            if rate.get("tokensPerMinute"):
                # Tokens are counted in blocks of 100 so one call is a bounded number of window entries.
                await self._wait_rate("tokens", max(1, int(rate["tokensPerMinute"]) // 100), deadline,
                                      weight=max(1, prompt_tokens // 100))
            fmt = config.get("responseFormat") if config.get("responseFormat") in ("json", "structured") else "text"
            extra = dict(request.get("extra") or {})
            if fmt == "structured" and isinstance(config.get("responseSchema"), dict):
                extra["jsonSchema"] = config["responseSchema"]
            completion = CompletionRequest(
                model=agent["model"], messages=messages,
                temperature=float(request.get("temperature") or config.get("temperature") or 0.7),
                max_tokens=int(request.get("maxTokens") or config.get("maxTokens") or 1024),
                top_p=float(config.get("topP", 1.0)), frequency_penalty=float(config.get("frequencyPenalty") or 0),
                presence_penalty=float(config.get("presencePenalty") or 0),
                stop=[str(s) for s in config.get("stopSequences") or []],
                timeout_s=max(0.1, deadline - time.monotonic()), response_format=fmt, extra=extra)
            provider = provider_for(agent["provider"], config)
            tools = await self._tools(config, caller, request.get("userId"), request.get("toolIds"))
            call = agent_loop.ModelCall(provider, deadline)
            result = await asyncio.wait_for(agent_loop.run(
                call=call, request=completion, config=config, tools=tools,
                run_tool=self._tool_runner(caller, request.get("userId"), task_id, deadline),
                idempotency_prefix=f"{task_id or 'test'}:{request.get('nodeId') or '-'}:{request.get('attempt', 0)}"),
                timeout=max(0.1, deadline - time.monotonic()))
            result.retries = call.retries_taken
        except TimeoutError:
            self._record(False, time.monotonic() - started, 0, 0.0)
            self._activity("error", {"taskId": task_id, "error": "timeout"}, rooms, caller)
            return NodeResult.fail("SYS_006", "agent call timed out")
        except ProviderError as exc:
            self._record(False, time.monotonic() - started, 0, 0.0)
            self._activity("error", {"taskId": task_id, "error": str(exc)}, rooms, caller)
            return NodeResult.fail(exc.code, str(exc), retryable=exc.retryable)
        finally:
            self.active -= 1
            semaphore.release()
            self.last_used, self.last_used_at = time.monotonic(), time.time()
        if key is not None:
            memory = self._conversation(key)
            memory.append((str(request.get("prompt", "")), result.text))
            while len(memory) > int(config.get("memorySize") or DEFAULT_MEMORY):
                memory.popleft()
        elapsed = time.monotonic() - started
        self._record(True, elapsed, result.total_tokens, result.cost)
        self._activity("completed", {"taskId": task_id, "output": result.text[:500],
                                     "duration": int(elapsed * 1000)}, rooms, caller)
        output = {"text": result.text, "model": result.model, "provider": result.provider,
                  "tokens": result.total_tokens, "cost": result.cost, "simulated": result.simulated}
        if result.parsed is not None:
            output["json"] = result.parsed
        if result.tool_calls:
            output["toolCalls"] = result.tool_calls
        return NodeResult.success(output, tokensUsed=result.total_tokens, model=result.model, cost=result.cost,
                                  promptTokens=result.prompt_tokens, completionTokens=result.completion_tokens,
                                  calls=result.calls, retries=result.retries, redactions=result.redactions or None,
                                  cacheHit=False, responseTime=int(elapsed * 1000), simulated=result.simulated)
