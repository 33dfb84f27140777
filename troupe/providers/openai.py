"""OpenAI through the official SDK (``AsyncOpenAI``), and the base for any
OpenAI-compatible server (``local``)."""

from __future__ import annotations

import time
from typing import Any

import openai

from troupe.providers.base import CompletionRequest, CompletionResult
from troupe.providers.common import (
    LoopClients,
    as_chat_messages,
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
        # Retries belong to the workflow's retry policy, not hidden in the SDK.
        self._clients = LoopClients(lambda: openai.AsyncOpenAI(
            api_key=api_key, base_url=base_url, max_retries=0, http_client=sdk_http_client(guarded=guarded)))

    def _params(self, request: CompletionRequest) -> dict[str, Any]:
        system, turns = as_chat_messages(request.messages)
        messages: list[dict[str, str]] = [{"role": "system", "content": system}] if system else []
        messages += [{"role": role, "content": text} for role, text in turns]
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
        usage = response.usage
        prompt_tokens = usage.prompt_tokens if usage else 0
        completion_tokens = usage.completion_tokens if usage else 0
        model = response.model or request.model
        cost = self._cost(model, prompt_tokens, completion_tokens)
        return CompletionResult(
            text=text, model=model, provider=self.name, prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens, cost_usd=cost.usd, latency_ms=latency_ms,
            raw={"id": response.id, "finishReason": choice.finish_reason if choice else None,
                 "pricing": cost.pricing, "usageReported": usage is not None})

    def context_window(self, model: str) -> int | None:
        return context_window_of(self.name, model)


class OpenAIProvider(OpenAICompatibleProvider):
    name = "openai"
