"""Anthropic through the official SDK (``AsyncAnthropic``, Messages API)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import anthropic

from troupe.infra.outbound import OutboundError
from troupe.providers.base import CompletionRequest, CompletionResult, ProviderError
from troupe.providers.common import (
    LoopClients,
    as_chat_messages,
    context_window_of,
    from_outbound,
    from_status,
    merge_consecutive,
    outbound_cause,
    sdk_http_client,
    timed_out,
    unreachable,
)
from troupe.providers.pricing import cost_of


class AnthropicProvider:
    name = "anthropic"

    def __init__(self, *, api_key: str, base_url: str | None, guarded: bool) -> None:
        self.base_url = base_url
        self.guarded = guarded
        self._clients = LoopClients(lambda: anthropic.AsyncAnthropic(
            api_key=api_key, base_url=base_url, max_retries=0, http_client=sdk_http_client(guarded=guarded)))

    @staticmethod
    def _params(request: CompletionRequest) -> dict[str, Any]:
        system, turns = as_chat_messages(request.messages)
        params: dict[str, Any] = {
            "model": request.model,
            "max_tokens": request.max_tokens,
            "messages": [{"role": role, "content": text} for role, text in merge_consecutive(turns)],
        }
        # This SDK release no longer lists the sampling fields among create()'s
        # arguments; the Messages API still takes them, so they go in the body.
        sampling: dict[str, Any] = {"temperature": request.temperature}
        # Recent Claude models refuse temperature and top_p together: send top_p only when set.
        if request.top_p != 1.0:
            sampling["top_p"] = request.top_p
        params["extra_body"] = sampling
        if system:
            params["system"] = system
        if request.stop:
            params["stop_sequences"] = list(request.stop)
        # The Messages API has no frequency/presence penalties nor a JSON mode flag.
        return params

    async def complete(self, request: CompletionRequest) -> CompletionResult:
        client = self._clients.get()
        params = self._params(request)
        started = time.perf_counter()
        try:
            async with asyncio.timeout(request.timeout_s + 1):
                response = await client.messages.create(**params, timeout=request.timeout_s)
        except OutboundError as exc:  # the guard's refusal, raised through the SDK's transport
            raise from_outbound(self.name, exc) from exc
        except (TimeoutError, anthropic.APITimeoutError) as exc:
            raise timed_out(self.name, request.timeout_s) from exc
        except anthropic.APIConnectionError as exc:
            blocked = outbound_cause(exc)
            raise (from_outbound(self.name, blocked) if blocked else unreachable(self.name, exc)) from exc
        except anthropic.APIStatusError as exc:
            raise from_status(self.name, exc.status_code, exc.message) from exc
        except anthropic.AnthropicError as exc:
            raise ProviderError("SYS_003", f"{self.name}: {exc}", retryable=False) from exc
        latency_ms = (time.perf_counter() - started) * 1000
        text = "".join(block.text for block in response.content if getattr(block, "type", None) == "text")
        prompt_tokens = response.usage.input_tokens if response.usage else 0
        completion_tokens = response.usage.output_tokens if response.usage else 0
        model = response.model or request.model
        cost = cost_of(self.name, model, prompt_tokens, completion_tokens)
        return CompletionResult(
            text=text, model=model, provider=self.name, prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens, cost_usd=cost.usd, latency_ms=latency_ms,
            raw={"id": response.id, "finishReason": response.stop_reason, "pricing": cost.pricing})

    def context_window(self, model: str) -> int | None:
        return context_window_of(self.name, model)
