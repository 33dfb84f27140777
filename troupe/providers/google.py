"""Google Gemini through the official ``google-genai`` SDK (Gemini API,
``client.aio.models.generate_content``)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx2
from google import genai
from google.genai import errors as genai_errors
from google.genai import types

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


class GoogleProvider:
    name = "google"

    def __init__(self, *, api_key: str, base_url: str | None, guarded: bool, api_version: str = "v1beta") -> None:
        self.base_url = base_url
        self.guarded = guarded

        def make_client() -> genai.Client:
            # Passing our own httpx2 client also keeps the SDK off aiohttp, so the
            # guard (when on) sees every connection; one attempt: retries are the
            # workflow's business.
            # The version is pinned: SDK releases move their default, and the
            # Gemini API's full feature set (system instructions, JSON mode) is v1beta.
            options = types.HttpOptions(base_url=base_url, api_version=api_version,
                                        httpx_async_client=sdk_http_client(guarded=guarded),
                                        retry_options=types.HttpRetryOptions(attempts=1))
            return genai.Client(api_key=api_key, http_options=options)

        self._clients = LoopClients(make_client)

    @staticmethod
    def _contents_and_config(request: CompletionRequest) -> tuple[list[types.Content], types.GenerateContentConfig]:
        system, turns = as_chat_messages(request.messages)
        contents = [types.Content(role="model" if role == "assistant" else "user", parts=[types.Part(text=text)])
                    for role, text in merge_consecutive(turns)]
        options: dict[str, Any] = {
            "temperature": request.temperature,
            "max_output_tokens": request.max_tokens,
            "top_p": request.top_p,
        }
        if system:
            options["system_instruction"] = system
        if request.stop:
            options["stop_sequences"] = list(request.stop)
        # Several Gemini models refuse penalty fields outright: send them only when set.
        if request.frequency_penalty:
            options["frequency_penalty"] = request.frequency_penalty
        if request.presence_penalty:
            options["presence_penalty"] = request.presence_penalty
        if request.response_format in ("json", "structured"):
            options["response_mime_type"] = "application/json"
            schema = (request.extra or {}).get("jsonSchema")
            if request.response_format == "structured" and isinstance(schema, dict):
                options["response_json_schema"] = schema
        return contents, types.GenerateContentConfig(**options)

    async def complete(self, request: CompletionRequest) -> CompletionResult:
        client = self._clients.get()
        contents, config = self._contents_and_config(request)
        started = time.perf_counter()
        try:
            async with asyncio.timeout(request.timeout_s):
                response = await client.aio.models.generate_content(model=request.model, contents=contents,
                                                                    config=config)
        except (TimeoutError, httpx2.TimeoutException) as exc:
            raise timed_out(self.name, request.timeout_s) from exc
        except OutboundError as exc:
            raise from_outbound(self.name, exc) from exc
        except genai_errors.APIError as exc:
            raise from_status(self.name, int(exc.code or 500), exc.message or str(exc)) from exc
        except httpx2.TransportError as exc:
            blocked = outbound_cause(exc)
            raise (from_outbound(self.name, blocked) if blocked else unreachable(self.name, exc)) from exc
        except (ValueError, TypeError) as exc:
            # The SDK could not parse what the server sent.
            raise ProviderError("SYS_003", f"{self.name}: unreadable response: {exc}", retryable=False) from exc
        latency_ms = (time.perf_counter() - started) * 1000
        candidate = response.candidates[0] if response.candidates else None
        parts = (candidate.content.parts or []) if candidate and candidate.content else []
        text = "".join(part.text for part in parts if part.text and not part.thought)
        usage = response.usage_metadata
        prompt_tokens = (usage.prompt_token_count or 0) if usage else 0
        completion_tokens = (usage.candidates_token_count or 0) if usage else 0
        model = response.model_version or request.model
        cost = cost_of(self.name, model, prompt_tokens, completion_tokens)
        finish = candidate.finish_reason if candidate else None
        return CompletionResult(
            text=text, model=model, provider=self.name, prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens, cost_usd=cost.usd, latency_ms=latency_ms,
            raw={"id": response.response_id, "finishReason": str(finish.value if finish else None),
                 "pricing": cost.pricing})

    def context_window(self, model: str) -> int | None:
        return context_window_of(self.name, model)
