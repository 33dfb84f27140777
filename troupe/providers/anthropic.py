"""Anthropic through the official SDK (``AsyncAnthropic``, Messages API)."""

from __future__ import annotations

import time
from typing import Any

import anthropic

from troupe.providers.base import CompletionRequest, CompletionResult, ToolCall
from troupe.providers.common import (
    LoopClients,
    context_window_of,
    sdk_errors,
    sdk_http_client,
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
    def _messages(request: CompletionRequest) -> tuple[str, list[dict[str, Any]]]:
        """System text and Messages API turns: tool calls as ``tool_use`` blocks, their
        results as ``tool_result`` blocks in a user turn; same-role turns merged (the API
        wants them alternating)."""
        system = "\n\n".join(m.content for m in request.messages if m.role == "system")
        turns: list[dict[str, Any]] = []
        for m in request.messages:
            if m.role == "system":
                continue
            if m.role == "tool" and m.tool_call_id:
                role, blocks = "user", [{"type": "tool_result", "tool_use_id": m.tool_call_id,
                                         "content": m.content}]
            elif m.role == "tool":  # a result no call asked for: shown as text
                role, blocks = "user", [{"type": "text", "text": f"Tool result:\n{m.content}"}]
            else:
                role = m.role
                blocks = [{"type": "text", "text": m.content}] if m.content else []
                blocks += [{"type": "tool_use", "id": c.id, "name": c.name, "input": c.arguments}
                           for c in m.tool_calls]
            if turns and turns[-1]["role"] == role:
                turns[-1]["content"] += blocks
            else:
                turns.append({"role": role, "content": blocks})
        for turn in turns:  # plain text turns stay plain strings
            if all(block["type"] == "text" for block in turn["content"]):
                turn["content"] = "\n\n".join(block["text"] for block in turn["content"])
        return system, turns

    @classmethod
    def _params(cls, request: CompletionRequest) -> dict[str, Any]:
        system, turns = cls._messages(request)
        params: dict[str, Any] = {
            "model": request.model,
            "max_tokens": request.max_tokens,
            "messages": turns,
        }
        if request.tools:
            params["tools"] = [{"name": t.name, "description": t.description, "input_schema": t.parameters}
                               for t in request.tools]
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
        async with sdk_errors(self.name, anthropic, anthropic.AnthropicError, request.timeout_s):
            response = await client.messages.create(**params, timeout=request.timeout_s)
        latency_ms = (time.perf_counter() - started) * 1000
        text = "".join(block.text for block in response.content if getattr(block, "type", None) == "text")
        calls = [ToolCall(id=block.id, name=block.name, arguments=dict(block.input or {}))
                 for block in response.content if getattr(block, "type", None) == "tool_use"]
        prompt_tokens = response.usage.input_tokens if response.usage else 0
        completion_tokens = response.usage.output_tokens if response.usage else 0
        model = response.model or request.model
        cost = cost_of(self.name, model, prompt_tokens, completion_tokens)
        return CompletionResult(
            text=text, model=model, provider=self.name, prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens, cost_usd=cost.usd, latency_ms=latency_ms,
            raw={"id": response.id, "finishReason": response.stop_reason, "pricing": cost.pricing},
            tool_calls=calls)

    def context_window(self, model: str) -> int | None:
        return context_window_of(self.name, model)
