"""The agent loop end to end (troupe.actors.agent_loop): saved agents of a real provider
(the official OpenAI SDK) against a local server that speaks the OpenAI API, through
the warm agent actors, the engine and the HTTP API."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import pytest
from aiohttp import web

from tests.utils.engine import (
    chain,
    executions,
    make_company,
    make_tool,
    make_workflow,
    node,
    run_workflow,
    wait_status,
)
from tests.utils.fixtures import assert_error, assert_ok
from tests.utils.stub_http import StubServer
from troupe.providers.base import ChatMessage, CompletionRequest, CompletionResult, ToolCall, ToolDef
from troupe.providers.pricing import cost_of
from troupe.providers.registry import get_provider

MODEL = "gpt-4o-mini"
USAGE = {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120}


def _answer(content: str | None, tool_calls: list[dict] | None = None) -> dict:
    message: dict = {"role": "assistant", "content": content}
    if tool_calls:
        message["tool_calls"] = tool_calls
    return {"id": f"chatcmpl-{uuid.uuid4().hex[:8]}", "object": "chat.completion", "created": 1700000000,
            "model": MODEL, "usage": USAGE,
            "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls" if tool_calls else "stop"}]}


class OpenAIStub:
    """A chat-completions endpoint whose answers are scripted per test; it records each
    request's body, arrival time and how many requests were in flight at once."""

    def __init__(self) -> None:
        self.server = StubServer()
        self.server.route("POST", "/v1/chat/completions", self._handle)
        self.script: list = []
        self.bodies: list[dict] = []
        self.arrivals: list[float] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.delay = 0.0

    async def _handle(self, request: web.Request) -> web.Response:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            body = await request.json()
            self.bodies.append(body)
            self.arrivals.append(time.monotonic())
            if self.delay:
                await asyncio.sleep(self.delay)
            step = self.script.pop(0) if self.script else _answer("ok")
            if callable(step):
                step = step(body)
            if isinstance(step, web.Response):
                return step
            return web.json_response(step)
        finally:
            self.in_flight -= 1

    @property
    def base_url(self) -> str:
        return f"{self.server.url}/v1"


@pytest.fixture
async def stub():
    s = OpenAIStub()
    await s.server.start()
    yield s
    await s.server.stop()


async def _agent(client, user, company: str, stub: OpenAIStub, **configuration) -> str:
    body = {"name": f"loop-{uuid.uuid4().hex[:6]}", "type": "custom", "model": MODEL, "provider": "openai",
            "companyId": company,
            # The agent's own key: a user-chosen baseUrl never gets the deployment's.
            "configuration": {"baseUrl": stub.base_url, "apiKey": "sk-agent-own-key", **configuration}}
    return assert_ok(await client.post("/api/agents", headers=user.headers, json=body), 201)["id"]


async def _install(company: str, tool: str, user_id: str) -> None:
    from troupe.db import models
    from troupe.db.session import session_scope

    async with session_scope() as session:
        session.add(models.CompanyTool(company_id=uuid.UUID(company), tool_id=uuid.UUID(tool), configuration={},
                                       installed_by=uuid.UUID(user_id)))


async def test_workflow_agent_calls_a_tool_through_function_calling(client, user, stub):
    company = await make_company(user.id)
    tool = await make_tool(user.id, "calculator")
    await _install(company, tool, user.id)
    agent = await _agent(client, user, company, stub, tools=[tool], systemPrompt="You compute.",
                         customInstructions=["Use the calculator for arithmetic."], topP=0.5,
                         frequencyPenalty=0.25, presencePenalty=0.5, stopSequences=["END"])

    def ask_for_tool(body: dict) -> dict:
        name = body["tools"][0]["function"]["name"]
        return _answer(None, [{"id": "call_1", "type": "function",
                               "function": {"name": name, "arguments": json.dumps({"expression": "6*7"})}}])

    def final(body: dict) -> dict:
        result = next(m for m in body["messages"] if m["role"] == "tool")
        return _answer(f"The answer is {json.loads(result['content'])['result']}")

    stub.script = [ask_for_tool, final]
    workflow = await make_workflow(company, user.id, [node("in", "input"), node("ask", "agent", agentId=agent,
                                                                                 prompt="What is 6 times 7?"),
                                                      node("out", "output")], chain("in", "ask", "out"))
    task_id = await run_workflow(client, user, company, workflow)
    task = await wait_status(client, user, task_id)
    assert task["status"] == "completed", task.get("error")

    first, second = stub.bodies
    # The sampling settings reach the API, and the prompt is built from the agent's parts.
    assert first["top_p"] == 0.5 and first["frequency_penalty"] == 0.25 and first["presence_penalty"] == 0.5
    assert first["stop"] == ["END"]
    system = first["messages"][0]
    assert system["role"] == "system" and "You compute." in system["content"]
    assert "Use the calculator for arithmetic." in system["content"]
    assert first["tools"][0]["function"]["parameters"]["required"] == ["expression"]
    # The tool ran (the runtime's answer went back to the model with the call's id).
    assert second["messages"][-2]["tool_calls"][0]["id"] == "call_1"
    assert second["messages"][-1] == {"role": "tool", "tool_call_id": "call_1", "content": '{"result": 42}'}

    row = next(r for r in await executions(client, user, task_id) if r["nodeId"] == "ask")
    assert row["output"]["text"] == "The answer is 42"
    assert row["output"]["toolCalls"] == [{"round": 1, "name": first["tools"][0]["function"]["name"], "ok": True,
                                           "toolId": tool}]
    meta = row["metadata"]
    per_call = cost_of("openai", MODEL, 100, 20).usd
    assert meta["tokensUsed"] == 240 and len(meta["calls"]) == 2
    assert all(c["promptTokens"] == 100 and c["completionTokens"] == 20 and c["pricing"] == "table"
               for c in meta["calls"])
    assert meta["cost"] == pytest.approx(2 * per_call) and meta["cost"] > 0
    assert task["metadata"]["cost"] == pytest.approx(2 * per_call)


async def test_429_with_retry_after_is_waited_out(client, user, stub):
    company = await make_company(user.id)
    agent = await _agent(client, user, company, stub)
    stub.script = [web.json_response({"error": {"message": "slow down", "type": "rate_limit"}}, status=429,
                                     headers={"Retry-After": "1"}),
                   _answer("after the wait")]
    workflow = await make_workflow(company, user.id, [node("in", "input"), node("ask", "agent", agentId=agent,
                                                                                 prompt="hi"),
                                                      node("out", "output")], chain("in", "ask", "out"))
    task_id = await run_workflow(client, user, company, workflow)
    task = await wait_status(client, user, task_id)
    assert task["status"] == "completed", task.get("error")
    assert len(stub.arrivals) == 2
    assert stub.arrivals[1] - stub.arrivals[0] >= 1.0  # Retry-After honoured
    rows = [r for r in await executions(client, user, task_id) if r["nodeId"] == "ask"]
    # Retried inside the one call (the provider policy), not as a second node attempt.
    assert len(rows) == 1 and rows[0]["output"]["text"] == "after the wait"
    assert rows[0]["metadata"]["retries"] == 1


async def test_json_response_format_gets_one_repair(client, user, stub):
    company = await make_company(user.id)
    agent = await _agent(client, user, company, stub, responseFormat="json")
    stub.script = [_answer("Sure! Here it is: {oops"), _answer('```json\n{"city": "Paris"}\n```')]
    data = assert_ok(await client.post(f"/api/agents/{agent}/test", headers=user.headers,
                                       json={"input": "Capital of France as JSON"}))
    assert json.loads(data["output"]) == {"city": "Paris"}
    assert stub.bodies[0]["response_format"] == {"type": "json_object"}
    repair = stub.bodies[1]["messages"]
    assert repair[-2] == {"role": "assistant", "content": "Sure! Here it is: {oops"}
    assert "not valid JSON" in repair[-1]["content"]

    # Still wrong after the repair: a clear error, no third call.
    stub.script = [_answer("nope"), _answer("still nope")]
    calls = len(stub.bodies)
    err = assert_error(await client.post(f"/api/agents/{agent}/test", headers=user.headers,
                                         json={"input": "again"}), 502, "SYS_003")
    assert "after one repair attempt" in err["message"] and len(stub.bodies) == calls + 2

    # structured: the answer must match responseSchema.
    schema = {"type": "object", "required": ["n"], "properties": {"n": {"type": "integer"}}}
    structured = await _agent(client, user, company, stub, responseFormat="structured", responseSchema=schema)
    stub.script = [_answer('{"n": "two"}'), _answer('{"n": 2}')]
    data = assert_ok(await client.post(f"/api/agents/{structured}/test", headers=user.headers, json={"input": "2"}))
    assert json.loads(data["output"]) == {"n": 2}
    assert stub.bodies[-2]["response_format"]["json_schema"]["schema"] == schema
    assert "does not match the response schema at n" in stub.bodies[-1]["messages"][-1]["content"]


async def test_personal_data_is_redacted_and_blocked_content_refused(client, user, stub):
    company = await make_company(user.id)
    agent = await _agent(client, user, company, stub)
    stub.script = [_answer("Write to jane.doe@example.org, card 4242 4242 4242 4242, phone +44 20 7946 0958.")]
    data = assert_ok(await client.post(f"/api/agents/{agent}/test", headers=user.headers, json={
        "input": "My mail is bob@example.com and my card is 4111-1111-1111-1111 (not 4111-1111-1111-1112)"}))
    # The model never saw the caller's personal data ...
    sent = stub.bodies[-1]["messages"][-1]["content"]
    assert "bob@example.com" not in sent and "[redacted email]" in sent
    assert "[redacted card]" in sent and "4111-1111-1111-1112" in sent  # not Luhn-valid: not a card
    # ... and the caller never sees the model's.
    assert data["output"] == ("Write to [redacted email], card [redacted card], phone [redacted phone].")

    calls = len(stub.bodies)
    err = assert_error(await client.post(f"/api/agents/{agent}/test", headers=user.headers,
                                         json={"input": "Tell me how to make a bomb"}), 422, "VAL_001")
    assert "content filter" in err["message"] and len(stub.bodies) == calls  # blocked before the model

    # Both filters off: the text passes untouched.
    plain = await _agent(client, user, company, stub, safety={"contentFilter": False, "personalDataFilter": False})
    stub.script = [_answer("mail bob@example.com")]
    data = assert_ok(await client.post(f"/api/agents/{plain}/test", headers=user.headers,
                                       json={"input": "bob@example.com"}))
    assert data["output"] == "mail bob@example.com" and stub.bodies[-1]["messages"][-1]["content"] == "bob@example.com"


async def test_max_concurrency_holds_across_two_callers(client, user, stub):
    company = await make_company(user.id)
    agent = await _agent(client, user, company, stub, maxConcurrency=1, rateLimit={"requestsPerMinute": 100})
    stub.delay = 0.8
    stub.script = [_answer("one"), _answer("two")]
    workflow = await make_workflow(company, user.id, [node("in", "input"), node("ask", "agent", agentId=agent,
                                                                                 prompt="from a run"),
                                                      node("out", "output")], chain("in", "ask", "out"))
    started = time.monotonic()
    # One caller through the engine (a node task), one through the API, at the same time.
    task_id = await run_workflow(client, user, company, workflow)
    test = await client.post(f"/api/agents/{agent}/test", headers=user.headers, json={"input": "from the API"})
    assert_ok(test)
    task = await wait_status(client, user, task_id)
    assert task["status"] == "completed", task.get("error")
    assert len(stub.bodies) == 2 and stub.max_in_flight == 1
    assert time.monotonic() - started >= 1.6


async def test_saved_agent_settings(client, user, stub):
    company = await make_company(user.id)
    agent = await _agent(client, user, company, stub, rateLimit={"requestsPerMinute": 5}, maxConcurrency=2)
    data = assert_ok(await client.get(f"/api/agents/{agent}", headers=user.headers))
    config = data["configuration"]
    assert config["apiKey"] == "********" and config["maxConcurrency"] == 2
    assert config["rateLimit"] == {"requestsPerMinute": 5, "tokensPerMinute": None}
    # The key is stored sealed and reaches the provider as sent.
    stub.script = [_answer("hello")]
    assert_ok(await client.post(f"/api/agents/{agent}/test", headers=user.headers, json={"input": "hi"}))
    assert stub.server.received[-1].headers["authorization"] == "Bearer sk-agent-own-key"
    # "********" keeps the stored key; a sealed value from outside is refused.
    assert_ok(await client.put(f"/api/agents/{agent}", headers=user.headers,
                               json={"configuration": {"apiKey": "********", "temperature": 0.1}}))
    from troupe.db import models
    from troupe.db.session import session_scope

    async with session_scope() as session:
        row = await session.get(models.Agent, uuid.UUID(agent))
        assert row.configuration["apiKey"].startswith("enc:v1:")
        sealed = row.configuration["apiKey"]
    assert_error(await client.put(f"/api/agents/{agent}", headers=user.headers,
                                  json={"configuration": {"apiKey": sealed}}), 422, "VAL_001",
                 field="configuration.apiKey")
    base = {"name": "x", "type": "custom", "model": "m", "companyId": company}
    for provider, configuration, field in [
        ("openai", {"endpoint": "http://127.0.0.1:9/x"}, "configuration.endpoint"),
        ("custom", {}, "configuration.endpoint"),
        ("custom", {"endpoint": "http://127.0.0.1:9/x", "baseUrl": "http://127.0.0.1:9"}, "configuration.baseUrl"),
        ("openai", {"responseSchema": {"type": "object"}}, "configuration.responseSchema"),
        ("openai", {"responseFormat": "structured", "responseSchema": {"type": 12}}, "configuration.responseSchema"),
        ("openai", {"maxConcurrency": 0}, "configuration.maxConcurrency"),
        ("openai", {"baseUrl": "ftp://x"}, "configuration.baseUrl"),
        ("openai", {"safety": {"biasDetection": True}}, "configuration.safety.biasDetection"),
        ("openai", {"safety": {"toxicityThreshold": 0.5}}, "configuration.safety.toxicityThreshold"),
        ("openai", {"integrations": {"slack": True}}, "configuration.integrations.slack"),
    ]:
        assert_error(await client.post("/api/agents", headers=user.headers, json={
            **base, "provider": provider, "configuration": configuration}), 422, "VAL_001", field=field)


async def test_knowledge_sources_are_indexed_and_the_best_chunks_reach_the_prompt(client, user, stub):
    page = {"html": "<html><head><script>var hidden = 'zebra';</script></head><body>"
                    "<p>The Troupe launch code word is PELICAN.</p><p>Unrelated text about gardening and soil.</p>"
                    "</body></html>"}

    async def serve_page(request: web.Request) -> web.Response:
        return web.Response(text=page["html"], content_type="text/html")

    stub.server.route("GET", "/doc", serve_page)
    await stub.server.stop()
    await stub.server.start()  # with the new route (same object, new port)
    company = await make_company(user.id)
    agent = await _agent(client, user, company, stub, knowledgeBase={
        "enabled": True, "sources": [f"{stub.server.url}/doc"], "updateFrequency": "weekly"})
    assert_ok(await client.post(f"/api/agents/{agent}/train", headers=user.headers, json={
        "trainingData": [{"input": "Who founded the bakery?", "output": "Marguerite founded it in 1921."}]}))
    stub.script = [_answer("PELICAN"), _answer("1921")]
    assert_ok(await client.post(f"/api/agents/{agent}/test", headers=user.headers,
                                json={"input": "What is the launch code word?"}))
    system = stub.bodies[-1]["messages"][0]["content"]
    assert "PELICAN" in system and "zebra" not in system
    assert_ok(await client.post(f"/api/agents/{agent}/test", headers=user.headers,
                                json={"input": "When was the bakery founded?"}))
    assert "Marguerite founded it in 1921." in stub.bodies[-1]["messages"][0]["content"]

    # A clone brings the indexed chunks along.
    clone = assert_ok(await client.post(f"/api/agents/{agent}/clone", headers=user.headers,
                                        json={"name": "copy", "companyId": company}), 201)["id"]
    from sqlalchemy import text

    from troupe.db.session import session_scope

    async with session_scope() as session:
        counts = dict((await session.execute(text(
            "SELECT agent_id::text, count(*) FROM agent_knowledge_chunks WHERE agent_id = ANY(:ids) "
            "GROUP BY agent_id"), {"ids": [uuid.UUID(agent), uuid.UUID(clone)]})).all())
    assert counts[agent] == counts[clone] >= 2

    # URL sources are fetched again (the actor starts this when they are older than updateFrequency).
    from troupe.knowledge.index import refresh_urls

    page["html"] = "<p>The launch code word is now ALBATROSS.</p>"
    assert await refresh_urls(agent) == 1
    stub.script = [_answer("ALBATROSS")]
    assert_ok(await client.post(f"/api/agents/{agent}/test", headers=user.headers,
                                json={"input": "What is the launch code word?"}))
    system = stub.bodies[-1]["messages"][0]["content"]
    assert "ALBATROSS" in system and "PELICAN" not in system

    # A source that cannot be read is refused when the agent is saved.
    assert_error(await client.put(f"/api/agents/{agent}", headers=user.headers, json={"configuration": {
        "knowledgeBase": {"enabled": True, "sources": [f"{stub.server.url}/missing"]}}}), 502, "SYS_003",
        field="configuration.knowledgeBase.sources")


# ---- function calling on the other APIs (provider level, no Ray) ----------------------------------

CALC = ToolDef("calc", "Evaluates arithmetic", {"type": "object", "properties": {"expression": {"type": "string"}},
                                                "required": ["expression"]})


@pytest.fixture
def operator_urls(monkeypatch):
    from troupe.config import get_settings

    current = get_settings()

    def set_(**values):
        for name, value in values.items():
            monkeypatch.setattr(current, name, value)

    return set_


def _round_trip(first: CompletionResult) -> list[ChatMessage]:
    return [ChatMessage("system", "Be exact."), ChatMessage("user", "1+1?"),
            ChatMessage("assistant", first.text, tool_calls=tuple(first.tool_calls)),
            ChatMessage("tool", '{"result": 2}', tool_call_id=first.tool_calls[0].id, name="calc")]


async def test_anthropic_tool_use_round_trip(operator_urls):
    server = StubServer()
    answers = [{"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-3-5-haiku-20241022",
                "content": [{"type": "text", "text": "Let me compute."},
                            {"type": "tool_use", "id": "toolu_1", "name": "calc", "input": {"expression": "1+1"}}],
                "stop_reason": "tool_use", "usage": {"input_tokens": 10, "output_tokens": 5}},
               {"id": "msg_2", "type": "message", "role": "assistant", "model": "claude-3-5-haiku-20241022",
                "content": [{"type": "text", "text": "2"}], "stop_reason": "end_turn",
                "usage": {"input_tokens": 20, "output_tokens": 1}}]

    async def handle(request: web.Request) -> web.Response:
        return web.json_response(answers.pop(0))

    server.route("POST", "/v1/messages", handle)
    await server.start()
    try:
        operator_urls(anthropic_api_key="ak", anthropic_base_url=server.url)
        provider = get_provider("anthropic")
        request = CompletionRequest(model="claude-3-5-haiku-latest", messages=[ChatMessage("user", "1+1?")],
                                    tools=[CALC], timeout_s=5)
        first = await provider.complete(request)
        assert first.tool_calls == [ToolCall("toolu_1", "calc", {"expression": "1+1"})]
        assert server.received[0].json()["tools"] == [{"name": "calc", "description": "Evaluates arithmetic",
                                                       "input_schema": CALC.parameters}]
        second = await provider.complete(CompletionRequest(model="claude-3-5-haiku-latest",
                                                           messages=_round_trip(first), tools=[CALC], timeout_s=5))
        assert second.text == "2" and not second.tool_calls
        body = server.received[1].json()
        assert body["system"] == "Be exact."
        assert body["messages"][1] == {"role": "assistant", "content": [
            {"type": "text", "text": "Let me compute."},
            {"type": "tool_use", "id": "toolu_1", "name": "calc", "input": {"expression": "1+1"}}]}
        assert body["messages"][2] == {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_1", "content": '{"result": 2}'}]}
    finally:
        await server.stop()


async def test_gemini_function_call_round_trip(operator_urls):
    server = StubServer()
    answers = [{"candidates": [{"content": {"role": "model", "parts": [
                   {"functionCall": {"name": "calc", "args": {"expression": "1+1"}}}]}, "finishReason": "STOP"}],
                "usageMetadata": {"promptTokenCount": 10, "candidatesTokenCount": 5}},
               {"candidates": [{"content": {"role": "model", "parts": [{"text": "2"}]}, "finishReason": "STOP"}],
                "usageMetadata": {"promptTokenCount": 20, "candidatesTokenCount": 1}}]

    async def handle(request: web.Request) -> web.Response:
        return web.json_response(answers.pop(0))

    server.route("POST", "/v1beta/models/{model}", handle)
    await server.start()
    try:
        operator_urls(google_ai_api_key="gk", google_ai_base_url=server.url)
        provider = get_provider("google")
        first = await provider.complete(CompletionRequest(model="gemini-2.0-flash",
                                                          messages=[ChatMessage("user", "1+1?")], tools=[CALC],
                                                          timeout_s=5))
        assert [(c.name, c.arguments) for c in first.tool_calls] == [("calc", {"expression": "1+1"})]
        declared = server.received[0].json()["tools"][0]["functionDeclarations"][0]
        # The SDK writes the proto field name (snake_case); the API reads both spellings.
        schema = declared.get("parametersJsonSchema", declared.get("parameters_json_schema"))
        assert declared["name"] == "calc" and schema == CALC.parameters
        second = await provider.complete(CompletionRequest(model="gemini-2.0-flash", messages=_round_trip(first),
                                                           tools=[CALC], timeout_s=5))
        assert second.text == "2"
        contents = server.received[1].json()["contents"]
        assert contents[1]["role"] == "model" and contents[1]["parts"][0]["functionCall"]["name"] == "calc"
        assert contents[2] == {"role": "user", "parts": [
            {"functionResponse": {"name": "calc", "response": {"result": '{"result": 2}'}}}]}
    finally:
        await server.stop()
