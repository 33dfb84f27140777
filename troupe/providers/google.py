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
from troupe.providers.base import CompletionRequest, CompletionResult, ProviderError, ToolCall
from troupe.providers.common import (
    LoopClients,
    context_window_of,
    from_outbound,
    from_status,
    outbound_cause,
    sdk_http_client,
    timed_out,
    unreachable,
)
from troupe.providers.pricing import cost_of
from troupe.providers.retry import retry_after_of


class GoogleProvider:
    name = "google"

    def __init__(self, *, api_key: str, base_url: str | None, guarded: bool, api_version: str = "v1beta") -> None:
        self.base_url = base_url
        self.guarded = guarded

        def make_client() -> genai.Client:
            # Passing our own httpx2 client also keeps the SDK off aiohttp, so the
            # guard (when on) sees every connection; one attempt: troupe.providers.retry
            # is the one retry policy.
            # The version is pinned: SDK releases move their default, and the
            # Gemini API's full feature set (system instructions, JSON mode) is v1beta.
            options = types.HttpOptions(base_url=base_url, api_version=api_version,
                                        httpx_async_client=sdk_http_client(guarded=guarded),
                                        retry_options=types.HttpRetryOptions(attempts=1))
            return genai.Client(api_key=api_key, http_options=options)

        self._clients = LoopClients(make_client)

    @staticmethod
    def _contents(request: CompletionRequest) -> tuple[str, list[types.Content]]:
        """System text and Gemini contents: tool calls as ``function_call`` parts of a
        model turn, their results as ``function_response`` parts of a user turn;
        same-role turns merged (the API wants them alternating)."""
        system = "\n\n".join(m.content for m in request.messages if m.role == "system")
        names = {c.id: c.name for m in request.messages for c in m.tool_calls}
        contents: list[types.Content] = []
        for m in request.messages:
            if m.role == "system":
                continue
            if m.role == "tool" and not (m.name or m.tool_call_id in names):
                role, parts = "user", [types.Part(text=f"Tool result:\n{m.content}")]
            elif m.role == "tool":
                role = "user"
                parts = [types.Part(function_response=types.FunctionResponse(
                    name=m.name or names.get(m.tool_call_id or "", ""), response={"result": m.content}))]
            else:
                role = "model" if m.role == "assistant" else "user"
                parts = [types.Part(text=m.content)] if m.content else []
                parts += [types.Part(function_call=types.FunctionCall(name=c.name, args=c.arguments))
                          for c in m.tool_calls]
            if contents and contents[-1].role == role:
                last = contents[-1].parts or []
                if parts and last and all(p.text is not None for p in last + parts):
                    # Plain text turns stay one text part, as a chat transcript reads.
                    last[-1] = types.Part(text=f"{last[-1].text}\n\n" + "\n\n".join(p.text or "" for p in parts))
                else:
                    contents[-1].parts = last + parts
            else:
                contents.append(types.Content(role=role, parts=parts))
        return system, contents

    @classmethod
    def _contents_and_config(cls, request: CompletionRequest
                             ) -> tuple[list[types.Content], types.GenerateContentConfig]:
        system, contents = cls._contents(request)
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
        if request.tools:
            options["tools"] = [types.Tool(function_declarations=[types.FunctionDeclaration(
                name=t.name, description=t.description, parameters_json_schema=t.parameters) for t in request.tools])]
            # Calls are run by the agent loop (with the caller's permissions), never by the SDK.
            options["automatic_function_calling"] = types.AutomaticFunctionCallingConfig(disable=True)
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
            error = from_status(self.name, int(exc.code or 500), exc.message or str(exc))
            error.retry_after = retry_after_of(getattr(exc.response, "headers", None))
            raise error from exc
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
        calls = [ToolCall(id=part.function_call.id or f"call_{index}", name=part.function_call.name or "",
                          arguments=dict(part.function_call.args or {}))
                 for index, part in enumerate(parts) if part.function_call is not None]
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
                 "pricing": cost.pricing},
            tool_calls=calls)

    def context_window(self, model: str) -> int | None:
        return context_window_of(self.name, model)
