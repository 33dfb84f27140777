"""Real provider clients (official SDKs) against local servers that speak each
provider's wire API; no Ray needed."""

from __future__ import annotations

import asyncio
import json

import pytest
from aiohttp import web

from tests.utils.stub_http import StubServer, closed_port
from troupe.providers.base import ChatMessage, CompletionRequest, ProviderError
from troupe.providers.registry import get_provider
from troupe.security import SecretBox

MESSAGES = [
    ChatMessage("system", "You are terse."),
    ChatMessage("user", "Hello"),
    ChatMessage("assistant", "Hi."),
    ChatMessage("user", "Sum 2+2"),
]


def _request(model: str, **overrides) -> CompletionRequest:
    values = {"model": model, "messages": MESSAGES, "temperature": 0.2, "max_tokens": 64, "top_p": 0.9,
              "stop": ["END"], "timeout_s": 5.0}
    values.update(overrides)
    return CompletionRequest(**values)


@pytest.fixture
def settings(settings):
    settings(outbound_allowlist=[])
    return settings


class Scripted:
    """A handler that answers with the next scripted (status, body, delay)."""

    def __init__(self, ok_body: dict):
        self.ok_body = ok_body
        self.script: list[tuple[int, dict, float]] = []

    def fail_next(self, status: int, body: dict, delay: float = 0.0) -> None:
        self.script.append((status, body, delay))

    async def __call__(self, request: web.Request) -> web.Response:
        status, body, delay = self.script.pop(0) if self.script else (200, self.ok_body, 0.0)
        if delay:
            await asyncio.sleep(delay)
        return web.json_response(body, status=status)


async def _serve(path: str, handler) -> StubServer:
    server = StubServer()
    server.route("POST", path, handler)
    return await server.start()


# ---- OpenAI ---------------------------------------------------------------------------------

OPENAI_OK = {
    "id": "chatcmpl-1", "object": "chat.completion", "created": 1700000000, "model": "gpt-4o-mini-2024-07-18",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "4"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 1000, "completion_tokens": 2000, "total_tokens": 3000},
}


@pytest.fixture
async def openai_server():
    handler = Scripted(OPENAI_OK)
    server = await _serve("/v1/chat/completions", handler)
    server.handler = handler
    yield server
    await server.stop()


async def test_openai_request_and_result(openai_server, settings):
    settings(openai_api_key="sk-test", openai_base_url=f"{openai_server.url}/v1")
    provider = get_provider("openai")
    result = await provider.complete(_request("gpt-4o-mini", response_format="json"))
    sent = openai_server.received[-1]
    assert sent.headers["authorization"] == "Bearer sk-test"
    body = sent.json()
    assert body["model"] == "gpt-4o-mini"
    assert body["messages"] == [{"role": "system", "content": "You are terse."},
                                {"role": "user", "content": "Hello"},
                                {"role": "assistant", "content": "Hi."},
                                {"role": "user", "content": "Sum 2+2"}]
    assert (body["temperature"], body["max_completion_tokens"], body["top_p"], body["stop"]) == (0.2, 64, 0.9,
                                                                                               ["END"])
    assert body["response_format"] == {"type": "json_object"}
    assert result.text == "4" and result.provider == "openai" and result.simulated is False
    assert (result.prompt_tokens, result.completion_tokens, result.total_tokens) == (1000, 2000, 3000)
    # gpt-4o-mini: $0.15 in, $0.60 out per 1M tokens; the dated snapshot prices as its family.
    assert result.cost_usd == pytest.approx((1000 * 0.15 + 2000 * 0.60) / 1e6)
    assert result.raw["pricing"] == "table" and result.latency_ms > 0
    assert provider.context_window("gpt-4o-mini") == 128_000
    assert get_provider("openai") is provider  # cached per (name, base URL, key)


async def test_openai_unknown_model_costs_zero_and_says_so(openai_server, settings):
    openai_server.handler.ok_body = {**OPENAI_OK, "model": "my-finetune"}
    settings(openai_api_key="sk-test", openai_base_url=f"{openai_server.url}/v1")
    result = await get_provider("openai").complete(_request("my-finetune"))
    assert result.cost_usd == 0.0 and result.raw["pricing"] == "unknown"


@pytest.mark.parametrize(("status", "code", "retryable"), [
    (429, "SYS_004", True), (500, "SYS_003", True), (503, "SYS_003", True),
    (401, "SYS_003", False), (400, "SYS_003", False),
])
async def test_openai_error_mapping(openai_server, settings, status, code, retryable):
    settings(openai_api_key="sk-test", openai_base_url=f"{openai_server.url}/v1")
    openai_server.handler.fail_next(status, {"error": {"message": f"failed {status}", "type": "x"}})
    with pytest.raises(ProviderError) as caught:
        await get_provider("openai").complete(_request("gpt-4o"))
    assert (caught.value.code, caught.value.retryable) == (code, retryable)
    assert len(openai_server.received) == 1  # the SDK's own retries are off


async def test_openai_timeout_and_unreachable(openai_server, settings):
    settings(openai_api_key="sk-test", openai_base_url=f"{openai_server.url}/v1")
    openai_server.handler.fail_next(200, OPENAI_OK, delay=3)
    with pytest.raises(ProviderError) as caught:
        await get_provider("openai").complete(_request("gpt-4o", timeout_s=0.5))
    assert (caught.value.code, caught.value.retryable) == ("SYS_006", True)
    settings(openai_base_url=f"http://127.0.0.1:{closed_port()}/v1")
    with pytest.raises(ProviderError) as caught:
        await get_provider("openai").complete(_request("gpt-4o"))
    assert (caught.value.code, caught.value.retryable) == ("SYS_007", True)


async def test_per_agent_base_url_goes_through_the_guard(openai_server, settings):
    settings(openai_api_key="sk-env", openai_base_url=None)
    config = {"baseUrl": f"{openai_server.url}/v1", "apiKey": SecretBox().seal("sk-agent")}
    with pytest.raises(ProviderError) as caught:
        await get_provider("openai", config=config).complete(_request("gpt-4o"))
    assert (caught.value.code, caught.value.retryable) == ("BIZ_002", False)
    assert openai_server.received == []
    settings(outbound_allowlist=["127.0.0.1"])
    result = await get_provider("openai", config=config).complete(_request("gpt-4o"))
    assert result.text == "4"
    # The sealed per-agent key was opened and sent, not the deployment's.
    assert openai_server.received[-1].headers["authorization"] == "Bearer sk-agent"


# ---- local (OpenAI-compatible) -----------------------------------------------------------------

async def test_local_server_on_loopback(openai_server, settings):
    settings(local_llm_base_url=f"{openai_server.url}/v1")
    openai_server.handler.ok_body = {**OPENAI_OK, "model": "llama3.1:8b"}
    result = await get_provider("local").complete(_request("llama3.1:8b"))
    body = openai_server.received[-1].json()
    assert body["max_tokens"] == 64 and "max_completion_tokens" not in body
    assert openai_server.received[-1].headers["authorization"] == "Bearer no-key"
    assert result.provider == "local" and result.text == "4"
    assert result.cost_usd == 0.0 and result.raw["pricing"] == "self-hosted"


# ---- Anthropic ----------------------------------------------------------------------------------

ANTHROPIC_OK = {
    "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-3-5-haiku-20241022",
    "content": [{"type": "text", "text": "Four"}, {"type": "text", "text": "."}],
    "stop_reason": "end_turn", "stop_sequence": None,
    "usage": {"input_tokens": 300, "output_tokens": 50},
}


@pytest.fixture
async def anthropic_server():
    handler = Scripted(ANTHROPIC_OK)
    server = await _serve("/v1/messages", handler)
    server.handler = handler
    yield server
    await server.stop()


async def test_anthropic_request_and_result(anthropic_server, settings):
    settings(anthropic_api_key="ak-test", anthropic_base_url=anthropic_server.url)
    provider = get_provider("anthropic")
    messages = [*MESSAGES, ChatMessage("tool", "calculator: 4")]
    result = await provider.complete(_request("claude-3-5-haiku-latest", messages=messages))
    sent = anthropic_server.received[-1]
    # The SDK sends the key as x-api-key (1.x) or as a bearer token (2.x releases).
    assert "ak-test" in (sent.headers.get("x-api-key"), sent.headers.get("authorization", "").removeprefix("Bearer "))
    assert "anthropic-version" in sent.headers
    body = sent.json()
    assert body["model"] == "claude-3-5-haiku-latest" and body["system"] == "You are terse."
    # Consecutive user turns (the tool result) merge: the API wants alternating roles.
    assert body["messages"] == [{"role": "user", "content": "Hello"},
                                {"role": "assistant", "content": "Hi."},
                                {"role": "user", "content": "Sum 2+2\n\nTool result:\ncalculator: 4"}]
    assert (body["max_tokens"], body["temperature"], body["top_p"], body["stop_sequences"]) == (64, 0.2, 0.9,
                                                                                              ["END"])
    assert result.text == "Four." and (result.prompt_tokens, result.completion_tokens) == (300, 50)
    assert result.cost_usd == pytest.approx((300 * 0.80 + 50 * 4.00) / 1e6)
    assert result.raw["finishReason"] == "end_turn"
    assert provider.context_window("claude-3-5-haiku-20241022") == 200_000


@pytest.mark.parametrize(("status", "code", "retryable"), [
    (429, "SYS_004", True), (529, "SYS_003", True), (401, "SYS_003", False),
])
async def test_anthropic_error_mapping(anthropic_server, settings, status, code, retryable):
    settings(anthropic_api_key="ak-test", anthropic_base_url=anthropic_server.url)
    anthropic_server.handler.fail_next(status, {"type": "error", "error": {"type": "x", "message": "no"}})
    with pytest.raises(ProviderError) as caught:
        await get_provider("anthropic").complete(_request("claude-3-5-sonnet-latest"))
    assert (caught.value.code, caught.value.retryable) == (code, retryable)


async def test_anthropic_timeout(anthropic_server, settings):
    settings(anthropic_api_key="ak-test", anthropic_base_url=anthropic_server.url)
    anthropic_server.handler.fail_next(200, ANTHROPIC_OK, delay=3)
    with pytest.raises(ProviderError) as caught:
        await get_provider("anthropic").complete(_request("claude-3-5-haiku-latest", timeout_s=0.5))
    assert caught.value.code == "SYS_006"


# ---- Google -------------------------------------------------------------------------------------

GOOGLE_OK = {
    "candidates": [{"content": {"role": "model", "parts": [{"text": "{\"sum\": 4}"}]}, "finishReason": "STOP",
                    "index": 0}],
    "usageMetadata": {"promptTokenCount": 120, "candidatesTokenCount": 8, "totalTokenCount": 128},
    "modelVersion": "gemini-2.0-flash-001", "responseId": "r-1",
}


@pytest.fixture
async def google_server():
    handler = Scripted(GOOGLE_OK)
    server = await _serve("/v1beta/models/{model}", handler)
    server.handler = handler
    yield server
    await server.stop()


async def test_google_request_and_result(google_server, settings):
    settings(google_ai_api_key="gk-test", google_ai_base_url=google_server.url)
    provider = get_provider("google")
    result = await provider.complete(_request("gemini-2.0-flash", response_format="json", presence_penalty=0.5))
    sent = google_server.received[-1]
    assert sent.path == "/v1beta/models/gemini-2.0-flash:generateContent"
    assert sent.headers["x-goog-api-key"] == "gk-test"
    body = sent.json()
    assert body["contents"] == [{"role": "user", "parts": [{"text": "Hello"}]},
                                {"role": "model", "parts": [{"text": "Hi."}]},
                                {"role": "user", "parts": [{"text": "Sum 2+2"}]}]
    assert body["systemInstruction"]["parts"] == [{"text": "You are terse."}]
    config = body["generationConfig"]
    assert (config["temperature"], config["maxOutputTokens"], config["topP"], config["stopSequences"]) == (
        0.2, 64, 0.9, ["END"])
    assert config["responseMimeType"] == "application/json" and config["presencePenalty"] == 0.5
    assert "frequencyPenalty" not in config
    assert json.loads(result.text) == {"sum": 4}
    assert (result.prompt_tokens, result.completion_tokens) == (120, 8) and result.model == "gemini-2.0-flash-001"
    assert result.cost_usd == pytest.approx((120 * 0.10 + 8 * 0.40) / 1e6)
    assert provider.context_window("gemini-2.0-flash") == 1_000_000


@pytest.mark.parametrize(("status", "code", "retryable"), [
    (429, "SYS_004", True), (500, "SYS_003", True), (403, "SYS_003", False),
])
async def test_google_error_mapping(google_server, settings, status, code, retryable):
    settings(google_ai_api_key="gk-test", google_ai_base_url=google_server.url)
    google_server.handler.fail_next(status, {"error": {"code": status, "message": "no", "status": "X"}})
    with pytest.raises(ProviderError) as caught:
        await get_provider("google").complete(_request("gemini-2.0-flash"))
    assert (caught.value.code, caught.value.retryable) == (code, retryable)
    assert len(google_server.received) == 1


async def test_google_timeout_and_unreachable(google_server, settings):
    settings(google_ai_api_key="gk-test", google_ai_base_url=google_server.url)
    google_server.handler.fail_next(200, GOOGLE_OK, delay=3)
    with pytest.raises(ProviderError) as caught:
        await get_provider("google").complete(_request("gemini-2.0-flash", timeout_s=0.5))
    assert caught.value.code == "SYS_006"
    settings(google_ai_base_url=f"http://127.0.0.1:{closed_port()}")
    with pytest.raises(ProviderError) as caught:
        await get_provider("google").complete(_request("gemini-2.0-flash"))
    assert (caught.value.code, caught.value.retryable) == ("SYS_007", True)


# ---- custom HTTP --------------------------------------------------------------------------------

CUSTOM_OK = {"text": "four", "model": "house-model-v2", "usage": {"promptTokens": 11, "completionTokens": 2},
             "costUsd": 0.0005}


@pytest.fixture
async def custom_server():
    handler = Scripted(CUSTOM_OK)
    server = await _serve("/generate", handler)
    server.handler = handler
    yield server
    await server.stop()


async def test_custom_contract(custom_server, settings):
    settings(outbound_allowlist=["127.0.0.1"])
    config = {"endpoint": f"{custom_server.url}/generate", "apiKey": "ck", "headers": {"X-Tenant": "acme"},
              "contextWindow": 4096}
    provider = get_provider("custom", config=config)
    result = await provider.complete(_request("house-model"))
    sent = custom_server.received[-1]
    assert sent.headers["authorization"] == "Bearer ck" and sent.headers["x-tenant"] == "acme"
    assert sent.json() == {
        "model": "house-model", "messages": [{"role": m.role, "content": m.content} for m in MESSAGES],
        "temperature": 0.2, "maxTokens": 64, "topP": 0.9, "stop": ["END"], "responseFormat": "text"}
    assert (result.text, result.model, result.prompt_tokens, result.completion_tokens) == (
        "four", "house-model-v2", 11, 2)
    assert result.cost_usd == 0.0005 and result.raw["pricing"] == "reported"
    assert provider.context_window("house-model") == 4096


async def test_custom_errors(custom_server, settings):
    config = {"endpoint": f"{custom_server.url}/generate"}
    with pytest.raises(ProviderError) as caught:  # loopback is not allow-listed
        await get_provider("custom", config=config).complete(_request("m"))
    assert (caught.value.code, caught.value.retryable) == ("BIZ_002", False)
    assert custom_server.received == []
    settings(outbound_allowlist=["127.0.0.1"])
    provider = get_provider("custom", config=config)
    cases = [(503, {"error": "busy"}, "SYS_003", True), (429, {}, "SYS_004", True),
             (400, {"error": "bad"}, "SYS_003", False), (200, {"answer": "no text field"}, "SYS_003", False),
             (200, {"text": "x", "usage": {"promptTokens": -1}}, "SYS_003", False)]
    for status, body, code, retryable in cases:
        custom_server.handler.fail_next(status, body)
        with pytest.raises(ProviderError) as caught:
            await provider.complete(_request("m"))
        assert (caught.value.code, caught.value.retryable) == (code, retryable), body
    custom_server.handler.fail_next(200, CUSTOM_OK, delay=3)
    with pytest.raises(ProviderError) as caught:
        await provider.complete(_request("m", timeout_s=0.5))
    assert (caught.value.code, caught.value.retryable) == ("SYS_006", True)


# ---- registry -----------------------------------------------------------------------------------

async def test_registry_refusals(settings):
    settings(openai_api_key=None, anthropic_api_key=None, google_ai_api_key=None, local_llm_base_url=None)
    for name, config in [("nope", None), ("openai", None), ("anthropic", None), ("google", None),
                         ("local", None), ("custom", None), ("custom", {"endpoint": "http://x", "headers": "bad"})]:
        with pytest.raises(ProviderError) as caught:
            get_provider(name, config=config)
        assert (caught.value.code, caught.value.retryable) == ("BIZ_002", False), name


async def test_registry_simulated_is_offline():
    provider = get_provider("simulated")
    result = await provider.complete(_request("simulated"))
    assert result.simulated is True and result.provider == "simulated"
    assert get_provider("SIMULATED") is provider
