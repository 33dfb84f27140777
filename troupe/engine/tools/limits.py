"""Per-tool rate limits: ``configuration.rateLimit`` admits ``requests`` calls per
``window`` seconds for each tool, counted in Redis so every API replica and node
worker shares one count. Without Redis the call is refused (retryable), never let
through uncounted."""

from __future__ import annotations

from typing import Any

from troupe.engine.contract import NodeResult, ToolSpec


async def admit(spec: ToolSpec, configuration: dict[str, Any]) -> NodeResult | None:
    from troupe.infra.ratelimit import hit

    rate = configuration.get("rateLimit") if isinstance(configuration.get("rateLimit"), dict) else {}
    requests = int(rate.get("requests") or 60)
    window = int(rate.get("window") or 60)
    try:
        decision = await hit(f"tool:{spec.id}", limit=requests, window_seconds=window)
    except Exception as exc:  # Redis unreachable: refuse rather than exceed the limit
        return NodeResult.fail("SYS_005", f"tool rate limit unavailable: {type(exc).__name__}", retryable=True)
    if decision.allowed:
        return None
    return NodeResult.fail("SYS_004", f"tool rate limit of {requests} calls per {window}s reached; retry in "
                           f"{decision.retry_after_seconds}s", retryable=True,
                           retryAfter=decision.retry_after_seconds)
