"""``translator`` tools: translate ``input.text`` with a model provider
(troupe.providers.registry), as configured in ``configuration.translator``:
``provider`` (``openai``, ``anthropic``, ``google``, ``local`` or
``simulated``; default ``simulated``), ``model``, ``targetLanguage``, ``sourceLanguage``
(default: detect), ``apiKey`` (stored sealed) and ``baseUrl`` (guarded like an agent's).
``input.targetLanguage``/``sourceLanguage`` override the configured ones.

The ``simulated`` provider works offline and does not translate: its answer is labelled
``[simulated]`` and the output says ``"simulated": true``.

Output: ``{"text", "targetLanguage", "sourceLanguage", "provider", "model", "tokens",
"simulated"}``."""

from __future__ import annotations

import asyncio

from troupe.engine.contract import NodeResult
from troupe.engine.tools.registry import ToolCall, ToolFailure, tool_runtime

DEFAULT_MODELS = {"simulated": "simulated-translator", "openai": "gpt-4o-mini",
                  "anthropic": "claude-3-5-haiku-latest", "google": "gemini-1.5-flash"}
MAX_TEXT = 50_000


@tool_runtime("translator")
def run_translator(call: ToolCall) -> NodeResult:
    from troupe.providers.base import ChatMessage, CompletionRequest, ProviderError
    from troupe.providers.registry import get_provider

    settings = call.section("translator")
    data = call.input if isinstance(call.input, dict) else {"text": call.input}
    text = data.get("text")
    if not isinstance(text, str) or not text.strip():
        raise ToolFailure("VAL_001", "translator input needs text")
    if len(text) > MAX_TEXT:
        raise ToolFailure("VAL_001", f"translator text is longer than {MAX_TEXT} characters")
    target = data.get("targetLanguage") or settings.get("targetLanguage")
    if not isinstance(target, str) or not target.strip():
        raise ToolFailure("VAL_001", "translator needs a targetLanguage (input or configuration.translator)")
    source = data.get("sourceLanguage") or settings.get("sourceLanguage") or "auto"
    name = str(settings.get("provider") or "simulated").lower()
    model = str(settings.get("model") or DEFAULT_MODELS.get(name) or "")
    if not model:
        raise ToolFailure("BIZ_003", f"translator provider {name!r} needs configuration.translator.model")
    config = {k: settings[k] for k in ("apiKey", "baseUrl") if settings.get(k)}
    origin = "the source language (detect it)" if source == "auto" else source
    request = CompletionRequest(
        model=model, temperature=0.0, max_tokens=min(8192, len(text) * 2 + 64), timeout_s=call.timeout,
        messages=[ChatMessage("system", f"Translate the user's text from {origin} into {target}. Answer with "
                              "the translation only, keeping formatting, names and numbers."),
                  ChatMessage("user", text)])
    try:
        provider = get_provider(name, config=config)
        result = asyncio.run(provider.complete(request))
    except ProviderError as exc:
        return NodeResult.fail(exc.code, f"translator: {exc}", retryable=exc.retryable)
    return NodeResult.success({"text": result.text.strip(), "targetLanguage": target, "sourceLanguage": source,
                               "provider": result.provider, "model": result.model,
                               "tokens": result.total_tokens, "simulated": bool(result.simulated)})
