"""The ``agent`` node: a node task that asks an agent for a completion.

With ``data.agentId`` the call goes to the agent's bound AgentActor (through the
warm pool, troupe.actors.pool), which enforces the agent's limits cluster-wide;
with an inline ``configuration.provider`` + ``model`` the provider is called from
this node task. Registered with the engine's node handlers by type
(troupe.engine.nodes loads this module when a worker first looks a handler up).
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from troupe.engine.contract import NodeResult, NodeSpec
from troupe.engine.nodes import failure, node_handler, success

# Inline agent nodes of a real provider share this per-company request budget unless
# their configuration sets rateLimit.requestsPerMinute.
INLINE_REQUESTS_PER_MINUTE = 600


@node_handler("agent")
def _agent(spec: NodeSpec) -> NodeResult:
    from troupe.actors import handles

    config = spec.config
    prompt = config.get("prompt")
    if prompt is None:
        prev = spec.context.get("prev")
        prompt = prev if isinstance(prev, str) else json.dumps(prev, default=str)
    timeout = float(spec.timeout)
    # The simulated provider's own options (latency, failures) are passed through; real providers ignore them.
    request = {"prompt": str(prompt), "system": config.get("system"), "temperature": config.get("temperature"),
               "maxTokens": config.get("maxTokens"), "taskId": spec.task_id, "companyId": spec.company_id,
               # Memory is the calling company's: this run's, or the named conversation's (troupe.actors.agent).
               "conversationId": str(config["conversationId"]) if config.get("conversationId") else None,
               "timeout": timeout, "nodeId": spec.node_id, "attempt": spec.attempt,
               "extra": {"attempt": spec.attempt,
                         **{k: config[k] for k in ("simulatedLatencyMs", "simulateFailAttempts", "simulateError")
                            if k in config}}}
    if spec.agent_id:
        return handles.call_sync(handles.agent_name(spec.agent_id), "complete", request, timeout=timeout + 5)
    provider, model = config.get("provider"), config.get("model")
    if not (isinstance(provider, str) and provider.strip() and isinstance(model, str) and model.strip()):
        return failure("BIZ_001", "agent node needs data.agentId or an inline configuration.provider and "
                                  "configuration.model", retryable=False)
    return asyncio.run(_inline_agent(spec, config, request))


async def _inline_agent(spec: NodeSpec, config: dict[str, Any], request: dict[str, Any]) -> NodeResult:
    """An agent node configured inline: no agent row and no AgentActor (no memory, no
    performance counters); the provider is called from this node task."""
    from troupe.actors.agent_loop import ModelCall
    from troupe.infra import ratelimit
    from troupe.infra.redis import close_redis
    from troupe.providers.base import ChatMessage, CompletionRequest, ProviderError
    from troupe.providers.registry import get_provider

    started = time.monotonic()
    deadline = started + float(request["timeout"])
    name = str(config["provider"]).strip().lower()
    rate = config.get("rateLimit") if isinstance(config.get("rateLimit"), dict) else {}
    per_minute = int(rate.get("requestsPerMinute") or (0 if name == "simulated" else INLINE_REQUESTS_PER_MINUTE))
    try:
        provider = get_provider(name, config=config)
        if per_minute > 0:
            # Cluster-wide per company and provider: inline nodes have no agent whose limit would apply.
            key = f"inline:{spec.company_id or '-'}:{name}:requests"
            while True:
                decision = await ratelimit.hit(key, limit=per_minute, window_seconds=60)
                if decision.allowed:
                    break
                if time.monotonic() + decision.retry_after_seconds > deadline:
                    raise ProviderError("SYS_004", f"inline {name} rate limit: waiting would exceed the timeout")
                await asyncio.sleep(min(decision.retry_after_seconds, 1.0))
        system = request.get("system") or config.get("systemPrompt")
        messages = ([ChatMessage("system", str(system))] if system else []) + [
            ChatMessage("user", str(request["prompt"]))]
        completion = CompletionRequest(
            model=str(config["model"]), messages=messages,
            temperature=float(request.get("temperature") or config.get("temperature") or 0.7),
            max_tokens=int(request.get("maxTokens") or 1024), timeout_s=max(0.1, deadline - time.monotonic()),
            response_format=config["responseFormat"] if config.get("responseFormat") in ("text", "json") else "text",
            extra=request.get("extra") or {})
        # 429s and 5xx under the one retry policy, as for saved agents (troupe.actors.agent_loop).
        result = await ModelCall(provider, deadline)(completion)
    except TimeoutError:
        return failure("SYS_006", "agent call timed out")
    except ProviderError as exc:
        return failure(exc.code, str(exc), retryable=exc.retryable)
    finally:
        await close_redis()
    elapsed = int((time.monotonic() - started) * 1000)
    output = {"text": result.text, "model": result.model, "provider": result.provider,
              "tokens": result.total_tokens, "cost": result.cost_usd, "simulated": result.simulated}
    return success(output, tokensUsed=result.total_tokens, model=result.model, cost=result.cost_usd,
                   cacheHit=False, responseTime=elapsed, simulated=result.simulated, inline=True)
