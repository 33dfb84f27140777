"""A model behind any HTTP endpoint speaking Troupe's small JSON contract,
called through the outbound guard (the endpoint is per-agent configuration).

Request (POST, ``Content-Type: application/json``, ``Authorization: Bearer <apiKey>``
when a key is configured, plus any configured ``headers``)::

    {"model": "...", "messages": [{"role": "system|user|assistant|tool", "content": "..."}],
     "temperature": 0.7, "maxTokens": 1024, "topP": 1.0, "stop": [], "responseFormat": "text"}

Response (2xx)::

    {"text": "...", "model": "optional", "usage": {"promptTokens": 12, "completionTokens": 34},
     "costUsd": 0.0 (optional)}

Errors: 429 -> SYS_004, 5xx -> SYS_003 (both retryable), other 4xx or a body
that breaks the contract -> SYS_003 not retryable, timeout SYS_006, network
SYS_007, a refused destination BIZ_002."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from troupe.infra import outbound
from troupe.infra.outbound import OutboundError
from troupe.providers.base import CompletionRequest, CompletionResult, ProviderError


class CustomHTTPProvider:
    name = "custom"

    def __init__(self, *, endpoint: str, api_key: str | None, headers: Mapping[str, str] | None = None,
                 context_window: int | None = None) -> None:
        self.endpoint = endpoint
        self._api_key = api_key
        self._headers = {str(k): str(v) for k, v in (headers or {}).items()}
        self._context_window = context_window

    def _body(self, request: CompletionRequest) -> dict[str, Any]:
        return {
            "model": request.model,
            "messages": [{"role": m.role, "content": m.content} for m in request.messages],
            "temperature": request.temperature,
            "maxTokens": request.max_tokens,
            "topP": request.top_p,
            "stop": list(request.stop),
            "responseFormat": request.response_format,
        }

    async def complete(self, request: CompletionRequest) -> CompletionResult:
        headers = dict(self._headers)
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        started = time.perf_counter()
        try:
            response = await outbound.request("POST", self.endpoint, headers=headers, json=self._body(request),
                                              timeout=request.timeout_s, raise_for_status=True)
            payload = response.json()
        except OutboundError as exc:
            raise _provider_error(exc) from exc
        latency_ms = (time.perf_counter() - started) * 1000
        text, prompt_tokens, completion_tokens, cost = _parse(payload)
        return CompletionResult(
            text=text, model=str(payload.get("model") or request.model), provider=self.name,
            prompt_tokens=prompt_tokens, completion_tokens=completion_tokens, cost_usd=cost,
            latency_ms=latency_ms,
            raw={"pricing": "reported" if "costUsd" in payload else "unknown", "status": response.status})

    def context_window(self, model: str) -> int | None:
        return self._context_window


def _provider_error(exc: OutboundError) -> ProviderError:
    if exc.reason == "destination_not_allowed":
        return ProviderError("BIZ_002", f"custom: {exc.message}", retryable=False)
    if exc.reason in ("response_too_large", "too_many_redirects", "invalid_json", "invalid_url"):
        return ProviderError("SYS_003", f"custom: {exc.message}", retryable=False)
    return ProviderError(str(exc.code), f"custom: {exc.message}", retryable=exc.retryable)


def _count(usage: Mapping[str, Any], key: str) -> int:
    value = usage.get(key, 0)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ProviderError("SYS_003", f"custom: usage.{key} must be a non-negative integer", retryable=False)
    return value


def _parse(payload: Any) -> tuple[str, int, int, float]:
    if not isinstance(payload, dict) or not isinstance(payload.get("text"), str):
        raise ProviderError("SYS_003", "custom: response must be a JSON object with a string 'text'",
                            retryable=False)
    usage = payload.get("usage") or {}
    if not isinstance(usage, dict):
        raise ProviderError("SYS_003", "custom: 'usage' must be an object", retryable=False)
    cost = payload.get("costUsd", 0.0)
    if isinstance(cost, bool) or not isinstance(cost, int | float) or cost < 0:
        raise ProviderError("SYS_003", "custom: 'costUsd' must be a non-negative number", retryable=False)
    return payload["text"], _count(usage, "promptTokens"), _count(usage, "completionTokens"), float(cost)
