"""Tool runtimes: the one way a tool runs, whoever calls it (a workflow's tool node,
``POST /api/tools/:id/test``, an agent's function call).

``run_tool(spec, input, context=...)`` (sync; node tasks and worker threads) and
``arun_tool`` (async) do, in order:

1. open the sealed values of the configuration and input for this call only;
2. validate the input against ``schema.input`` and ``configuration.validation.inputSchema``
   (VAL_001, not retryable);
3. answer from ``configuration.caching`` when enabled (``memory``: this process;
   ``redis``; ``database``: the ``tool_cache`` table), keyed by tool, configuration,
   company and input, for ``ttl`` seconds; only successful results are cached;
4. admit the call under ``configuration.rateLimit`` (``requests`` per ``window`` seconds,
   per tool, cluster-wide in Redis; SYS_004, retryable, ``meta.retryAfter``);
5. run the type's runtime (``registry``), retrying retryable failures
   ``configuration.retries`` times;
6. validate the output against ``schema.output`` and ``validation.outputSchema`` (BIZ_003);
7. replace every opened secret in the output and message by ``********``.

The result is a ``NodeResult`` (``ToolResult``): ``ok``, ``output``, ``code``,
``message``, ``retryable``, ``meta`` (``cached``, ``attempts``)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from troupe.engine.contract import NodeResult, ToolSpec
from troupe.engine.tools.registry import ToolCall, ToolContext, runtime_for, tool_runtime, tool_types

ToolResult = NodeResult

__all__ = ["ToolCall", "ToolContext", "ToolResult", "arun_tool", "run_tool", "tool_runtime", "tool_types"]


def run_tool(spec: ToolSpec, tool_input: Any, *, context: ToolContext | None = None) -> NodeResult:
    """Run one tool call to completion (blocking; do not call on an event loop)."""
    from troupe.infra.redis import close_redis

    async def main() -> NodeResult:
        try:
            return await arun_tool(spec, tool_input, context=context)
        finally:
            await close_redis()

    return asyncio.run(main())


async def arun_tool(spec: ToolSpec, tool_input: Any, *, context: ToolContext | None = None) -> NodeResult:
    """``run_tool`` for async callers: the runtime itself runs in a worker thread."""
    from troupe.engine.nodes import SecretError, Secrets
    from troupe.engine.tools import cache, limits, validation

    context = context or ToolContext()
    secrets = Secrets()
    try:
        opened = secrets.open({"configuration": spec.configuration or {}, "input": tool_input})
    except SecretError as exc:
        return NodeResult.fail("BIZ_003", str(exc), retryable=False)
    configuration, data = opened["configuration"], opened["input"]
    kind = str(spec.type or "").lower()
    runtime = runtime_for(kind)
    if runtime is None:
        return NodeResult.fail("BIZ_003", f"tool type {kind!r} has no runtime", retryable=False)
    if context.validate_input and (problem := validation.check_input(spec, configuration, data)):
        return secrets.scrub_result(NodeResult.fail("VAL_001", problem, retryable=False))
    caching = configuration.get("caching") if isinstance(configuration.get("caching"), dict) else {}
    cache_key = cache.key_for(spec, context, tool_input) if caching.get("enabled") else None
    if cache_key is not None:
        found = await cache.get(str(caching.get("strategy") or "memory"), cache_key)
        if found is not None:
            return NodeResult.success(found, cached=True, attempts=0)
    # After the cache: an answer from it costs the target nothing, so it does not count.
    refusal = await limits.admit(spec, configuration)
    if refusal is not None:
        return refusal
    call = ToolCall(spec=spec, configuration=configuration, input=data, context=context, scrub=secrets.scrub)
    retries = max(0, int(configuration.get("retries") or 0))
    attempt = 0
    while True:
        attempt += 1
        result = await asyncio.to_thread(_guarded, runtime, call)
        if result.ok or not result.retryable or attempt > retries:
            break
        await asyncio.sleep(min(5.0, 0.25 * 2 ** (attempt - 1)))
    result.meta.setdefault("attempts", attempt)
    if result.ok and (problem := validation.check_output(spec, configuration, result.output)):
        result = NodeResult.fail("BIZ_003", problem, retryable=False, attempts=attempt)
    result = secrets.scrub_result(result)
    if result.ok and cache_key is not None:
        await cache.put(str(caching.get("strategy") or "memory"), cache_key, spec.id, result.output,
                        int(caching.get("ttl") or 0))
    return result


def _guarded(runtime: Any, call: ToolCall) -> NodeResult:
    """A runtime's bug is a recorded failure, never an exception out of the node task."""
    from troupe.engine.tools.registry import ToolFailure

    started = time.perf_counter()
    try:
        result = runtime(call)
    except ToolFailure as exc:
        result = NodeResult.fail(exc.code, exc.message, retryable=exc.retryable)
    except Exception as exc:
        raw = getattr(exc, "code", None)
        code = str(getattr(raw, "value", raw) or "SYS_001")
        result = NodeResult.fail(code, f"{type(exc).__name__}: {exc}",
                                 retryable=bool(getattr(exc, "retryable", False)))
    result.meta.setdefault("runtimeMs", int((time.perf_counter() - started) * 1000))
    return result
