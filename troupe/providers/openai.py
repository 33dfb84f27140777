"""OpenAI through the official SDK (``AsyncOpenAI``), and the base for any
OpenAI-compatible server (``local``)."""

from __future__ import annotations

import json
import time
from typing import Any

import openai

from troupe.providers.base import CompletionRequest, CompletionResult, ProviderError, ToolCall
from troupe.providers.common import (
    LoopClients,
    context_window_of,
    sdk_errors,
    sdk_http_client,
)
from troupe.providers.pricing import Cost, cost_of


class OpenAICompatibleProvider:
    """Chat Completions over the OpenAI SDK; subclasses differ in name, pricing
    and the max-tokens parameter."""

    name = "openai"
    # The official API wants max_completion_tokens (reasoning models refuse
    # max_tokens); compatible servers (Ollama, vLLM, LM Studio) know max_tokens.
    max_tokens_param = "max_completion_tokens"

    def __init__(self, *, api_key: str, base_url: str | None, guarded: bool) -> None:
        self.base_url = base_url
        self.guarded = guarded
        # One retry policy (troupe.providers.retry) wraps every call: none hidden in the SDK.
        self._clients = LoopClients(lambda: openai.AsyncOpenAI(
            api_key=api_key, base_url=base_url, max_retries=0, http_client=sdk_http_client(guarded=guarded)))

    @staticmethod
    def _messages(request: CompletionRequest) -> list[dict[str, Any]]:
        system = "\n\n".join(m.content for m in request.messages if m.role == "system")
        messages: list[dict[str, Any]] = [{"role": "system", "content": system}] if system else []
        for m in request.messages:
            if m.role == "system":
                continue
            if m.role == "tool" and m.tool_call_id:
                messages.append({"role": "tool", "tool_call_id": m.tool_call_id, "content": m.content})
            elif m.role == "tool":  # a result no call asked for: shown as text
                messages.append({"role": "user", "content": f"Tool result:\n{m.content}"})
            elif m.tool_calls:
                messages.append({"role": "assistant", "content": m.content or None, "tool_calls": [
                    {"id": c.id, "type": "function",
                     "function": {"name": c.name, "arguments": json.dumps(c.arguments)}} for c in m.tool_calls]})
            else:
                messages.append({"role": m.role, "content": m.content})
        return messages

    def _params(self, request: CompletionRequest) -> dict[str, Any]:
        messages = self._messages(request)
        params: dict[str, Any] = {
            "model": request.model,
            "messages": messages,
            "temperature": request.temperature,
            self.max_tokens_param: request.max_tokens,
            "top_p": request.top_p,
            "frequency_penalty": request.frequency_penalty,
            "presence_penalty": request.presence_penalty,
        }
        if request.stop:
            params["stop"] = list(request.stop)
        if request.tools:
            params["tools"] = [{"type": "function", "function": {
                "name": t.name, "description": t.description, "parameters": t.parameters}} for t in request.tools]
        schema = (request.extra or {}).get("jsonSchema")
        if request.response_format == "structured" and isinstance(schema, dict):
            params["response_format"] = {"type": "json_schema",
                                         "json_schema": {"name": "response", "schema": schema}}
        elif request.response_format in ("json", "structured"):
            params["response_format"] = {"type": "json_object"}
        return params

    def _cost(self, model: str, prompt_tokens: int, completion_tokens: int) -> Cost:
        return cost_of(self.name, model, prompt_tokens, completion_tokens)

    async def complete(self, request: CompletionRequest) -> CompletionResult:
        client = self._clients.get()
        params = self._params(request)
        started = time.perf_counter()
        async with sdk_errors(self.name, openai, openai.OpenAIError, request.timeout_s):
            response = await client.chat.completions.create(**params, timeout=request.timeout_s)
        latency_ms = (time.perf_counter() - started) * 1000
        choice = response.choices[0] if response.choices else None
        text = (choice.message.content or "") if choice else ""
        calls = [ToolCall(id=c.id, name=c.function.name, arguments=_arguments(c.function.arguments))
                 for c in ((choice.message.tool_calls or []) if choice else [])
                 if getattr(c, "function", None) is not None]
        usage = response.usage
        prompt_tokens = usage.prompt_tokens if usage else 0
        completion_tokens = usage.completion_tokens if usage else 0
        model = response.model or request.model
        cost = self._cost(model, prompt_tokens, completion_tokens)
        return CompletionResult(
            text=text, model=model, provider=self.name, prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens, cost_usd=cost.usd, latency_ms=latency_ms,
            raw={"id": response.id, "finishReason": choice.finish_reason if choice else None,
                 "pricing": cost.pricing, "usageReported": usage is not None},
            tool_calls=calls)

    def context_window(self, model: str) -> int | None:
        return context_window_of(self.name, model)


class OpenAIProvider(OpenAICompatibleProvider):
    name = "openai"


def _arguments(raw: str | None) -> dict[str, Any]:
    """A tool call's arguments: the API sends them as a JSON string."""
    try:
        value = json.loads(raw or "{}")
    except ValueError as exc:
        raise ProviderError("SYS_003", f"model sent tool arguments that are not JSON: {exc}", retryable=True) from exc
    if not isinstance(value, dict):
        raise ProviderError("SYS_003", "model sent tool arguments that are not a JSON object", retryable=True)
    return value
