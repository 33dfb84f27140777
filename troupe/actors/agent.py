"""AgentActor: one virtual actor per agent (named ``agent:<id>``).

It enforces the agent's own concurrency limit (``configuration.maxConcurrency``,
default 4) and its provider rate limits (``configuration.rateLimit``:
``requestsPerMinute``, ``tokensPerMinute``; counted in Redis so they hold
cluster-wide): a call waits for capacity and fails (SYS_004) only if the wait
would pass the caller's timeout. It keeps conversation memory (the last
``memorySize`` exchanges, default 10, trimmed to ``contextWindow`` tokens) and
accumulates performance counters, written to ``agents.performance``.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import deque
from typing import Any

import ray
from sqlalchemy import update

from troupe.actors import residency
from troupe.db import models
from troupe.db.session import session_scope, set_pool
from troupe.engine.nodes import failure, success
from troupe.events import publish
from troupe.infra import ratelimit
from troupe.providers.base import ChatMessage, CompletionRequest, ProviderError
from troupe.providers.simulated import SimulatedProvider, count_tokens
from troupe.timeutil import utcnow

DEFAULT_CONCURRENCY = 4
DEFAULT_MEMORY = 10


def provider_for(name: str) -> Any:
    if name == "simulated":
        return SimulatedProvider()
    from troupe.providers.registry import get_provider  # the real SDK clients: imported only when used

    return get_provider(name)


@ray.remote
class AgentActor:
    def __init__(self, agent_id: str) -> None:
        set_pool("none")
        self.agent_id = agent_id
        self.agent: dict[str, Any] | None = None
        self.semaphore: asyncio.Semaphore | None = None
        self.active = 0
        self.memory: deque[tuple[str, str]] = deque()
        self.perf: dict[str, Any] = {}
        self.watch = residency.IdleWatch(lambda: self.active > 0, self._deactivate)

    async def _load(self) -> dict[str, Any]:
        if self.agent is None:
            async with session_scope() as session:
                row = await session.get(models.Agent, uuid.UUID(self.agent_id))
                if row is None:
                    raise ProviderError("RES_001", "Agent not found", retryable=False)
                self.agent = {"model": row.model, "provider": row.provider, "config": dict(row.configuration or {}),
                              "company_id": str(row.company_id) if row.company_id else None, "status": row.status}
                self.perf = dict(row.performance or {})
            limit = int(self.agent["config"].get("maxConcurrency") or DEFAULT_CONCURRENCY)
            self.semaphore = asyncio.Semaphore(max(1, limit))
            for other in await residency.register_agent(self.agent_id):
                from troupe.actors import handles

                try:
                    other_handle = ray.get_actor(handles.agent_name(other), namespace=handles.NAMESPACE)
                    other_handle.evict.remote()
                except ValueError:
                    await residency.unregister_agent(other)
        return self.agent

    async def _deactivate(self) -> None:
        await residency.unregister_agent(self.agent_id)

    async def ping(self) -> dict[str, Any]:
        self.watch.touch()
        agent = await self._load()
        return {"agentId": self.agent_id, "active": self.active, "limit": agent["config"].get("maxConcurrency")}

    async def evict(self) -> bool:
        """Asked by the residency bound; leaves only when idle."""
        if self.active == 0:
            await self.watch.exit()
        return False

    async def reload(self) -> None:
        self.agent = None

    async def _wait_rate(self, key: str, limit: int, deadline: float, weight: int = 1) -> None:
        for _ in range(max(1, weight)):
            while True:
                decision = await ratelimit.hit(f"agent:{self.agent_id}:{key}", limit=limit, window_seconds=60)
                if decision.allowed:
                    break
                if time.monotonic() + decision.retry_after_seconds > deadline:
                    raise ProviderError("SYS_004", f"agent {key} rate limit: waiting would exceed the timeout")
                await asyncio.sleep(min(decision.retry_after_seconds, 1.0))

    def _history(self, config: dict[str, Any], window: int) -> list[ChatMessage]:
        messages: list[ChatMessage] = []
        budget = window
        for user_text, reply in reversed(self.memory):
            cost = count_tokens(user_text) + count_tokens(reply)
            if cost > budget:
                break
            budget -= cost
            messages[:0] = [ChatMessage("user", user_text), ChatMessage("assistant", reply)]
        return messages

    async def complete(self, request: dict[str, Any]) -> dict[str, Any]:
        """One model call for a node or a test; returns a node result dict."""
        self.watch.touch()
        started = time.monotonic()
        deadline = started + float(request.get("timeout") or 300)
        try:
            agent = await self._load()
        except ProviderError as exc:
            return failure(exc.code, str(exc), retryable=False)
        config = agent["config"]
        task_id = request.get("taskId")
        assert self.semaphore is not None
        try:
            await asyncio.wait_for(self.semaphore.acquire(), timeout=max(0.01, deadline - time.monotonic()))
        except TimeoutError:
            return failure("SYS_006", "timed out waiting for the agent's concurrency limit")
        self.active += 1
        await self._activity("started", {"taskId": task_id, "input": str(request.get("prompt"))[:500]})
        try:
            rate = config.get("rateLimit") or {}
            if rate.get("requestsPerMinute"):
                await self._wait_rate("requests", int(rate["requestsPerMinute"]), deadline)
            window = int(config.get("contextWindow") or 8192)
            messages: list[ChatMessage] = []
            system = request.get("system") or config.get("systemPrompt")
            if system:
                messages.append(ChatMessage("system", str(system)))
            for example in config.get("fewShotExamples") or []:
                messages += [ChatMessage("user", str(example.get("input", ""))),
                             ChatMessage("assistant", str(example.get("output", "")))]
            messages += self._history(config, window // 2)
            messages.append(ChatMessage("user", str(request.get("prompt", ""))))
            prompt_tokens = sum(count_tokens(m.content) for m in messages)
            if rate.get("tokensPerMinute"):
                # Tokens are counted in blocks of 100 so one call is a bounded number of Redis hits.
                await self._wait_rate("tokens", max(1, int(rate["tokensPerMinute"]) // 100), deadline,
                                      weight=max(1, prompt_tokens // 100))
            completion = CompletionRequest(
                model=agent["model"], messages=messages,
                temperature=float(request.get("temperature") or config.get("temperature") or 0.7),
                max_tokens=int(request.get("maxTokens") or config.get("maxTokens") or 1024),
                timeout_s=max(0.1, deadline - time.monotonic()),
                response_format=config.get("responseFormat", "text") if config.get("responseFormat") in
                ("text", "json", "structured") else "text",
                extra=request.get("extra") or {})
            provider = provider_for(agent["provider"])
            result = await asyncio.wait_for(provider.complete(completion), timeout=completion.timeout_s)
        except TimeoutError:
            await self._record(False, time.monotonic() - started, 0, 0.0)
            await self._activity("error", {"taskId": task_id, "error": "timeout"})
            return failure("SYS_006", "agent call timed out")
        except ProviderError as exc:
            await self._record(False, time.monotonic() - started, 0, 0.0)
            await self._activity("error", {"taskId": task_id, "error": str(exc)})
            return failure(exc.code, str(exc), retryable=exc.retryable)
        finally:
            self.active -= 1
            self.semaphore.release()
        self.memory.append((str(request.get("prompt", "")), result.text))
        while len(self.memory) > int(config.get("memorySize") or DEFAULT_MEMORY):
            self.memory.popleft()
        elapsed = time.monotonic() - started
        await self._record(True, elapsed, result.total_tokens, result.cost_usd)
        await self._activity("completed", {"taskId": task_id, "output": result.text[:500],
                                           "duration": int(elapsed * 1000)})
        output = {"text": result.text, "model": result.model, "provider": result.provider,
                  "tokens": result.total_tokens, "cost": result.cost_usd, "simulated": result.simulated}
        return success(output, tokensUsed=result.total_tokens, model=result.model, cost=result.cost_usd,
                       cacheHit=False, responseTime=int(elapsed * 1000), simulated=result.simulated)

    async def _record(self, ok: bool, seconds: float, tokens: int, cost: float) -> None:
        perf = self.perf
        perf["totalRequests"] = int(perf.get("totalRequests", 0)) + 1
        perf["successfulRequests"] = int(perf.get("successfulRequests", 0)) + (1 if ok else 0)
        perf["failedRequests"] = int(perf.get("failedRequests", 0)) + (0 if ok else 1)
        n = perf["totalRequests"]
        perf["averageResponseTime"] = round((float(perf.get("averageResponseTime", 0)) * (n - 1)
                                             + seconds * 1000) / n, 3)
        perf["successRate"] = round(perf["successfulRequests"] / n, 4)
        perf["errorRate"] = round(perf["failedRequests"] / n, 4)
        perf["totalTokensUsed"] = int(perf.get("totalTokensUsed", 0)) + tokens
        perf["totalCost"] = round(float(perf.get("totalCost", 0)) + cost, 6)
        perf["lastUpdated"] = utcnow().isoformat()
        async with session_scope() as session:
            await session.execute(update(models.Agent).where(models.Agent.id == uuid.UUID(self.agent_id))
                                  .values(performance=dict(perf), last_used_at=utcnow()))

    async def _activity(self, activity: str, details: dict[str, Any]) -> None:
        rooms = [f"agent:{self.agent_id}"]
        company_id = (self.agent or {}).get("company_id")
        if company_id:
            rooms.append(f"company:{company_id}")
        try:
            await publish(rooms, "agent:activity", {"agentId": self.agent_id, "activity": activity,
                                                    "details": {k: v for k, v in details.items() if v is not None}},
                          company_id=company_id)
        except Exception:  # events are best effort; the call itself must not fail on them
            pass
