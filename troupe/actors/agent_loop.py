"""The agent loop, run by an AgentActor for each call:

1. the prompt: system prompt, custom instructions, knowledge (the best chunks of the
   agent's indexed sources), few-shot examples, memory, then the caller's input;
2. safety on the way in: ``contentFilter`` blocks, ``personalDataFilter`` redacts;
3. the model is called with the agent's tools offered as functions; each tool call it
   makes runs through the tool runtimes with the caller's permissions and its result
   goes back, for at most ``MAX_TOOL_ROUNDS`` rounds (the last round offers no tools,
   so the model has to answer);
4. ``responseFormat`` ``json``/``structured``: the answer must parse as JSON (and match
   ``responseSchema``); one repair call, then a clear error;
5. safety on the way out, on the answer.

Every model call goes through one retry policy (troupe.providers.retry) for real
providers; tokens and cost are summed over the calls and kept per call.

Lean like troupe.actors.agent: standard library and the provider interface only;
jsonschema is imported when a schema has to be checked.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

from troupe.providers.base import (
    ChatMessage,
    CompletionRequest,
    CompletionResult,
    ProviderError,
    ToolCall,
    ToolDef,
)

MAX_TOOL_ROUNDS = 8
KNOWLEDGE_CHUNKS = 4
# knowledgeBase.updateFrequency: how old URL sources may get before they are fetched again.
REFRESH_AFTER_S = {"realtime": 60.0, "daily": 86_400.0, "weekly": 604_800.0}
# Tool results handed back to the model are cut here (a scraper can return megabytes).
MAX_TOOL_RESULT_CHARS = 16_000
REDACTED = {"email": "[redacted email]", "phone": "[redacted phone]", "card": "[redacted card]"}

# ---------------------------------------------------------------------------- safety

_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
# 13-19 digits, optionally grouped by spaces or dashes; kept only if the Luhn check passes.
_CARD = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])")
# International (+CC ...) or national numbers grouped by spaces or dashes, 7-15 digits in
# all; dots are not separators (IP addresses, versions) and ISO dates are left alone.
_PHONE = re.compile(r"(?<![\w+])(?<!\d[.-])(?:\+\d{1,3}[ -]?)?(?:\(\d{1,4}\)[ -]?)?\d{2,4}(?:[ -]\d{2,4}){1,4}"
                    r"(?!\w)(?![.-]\d)")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")

# Built-in content filter: phrases that are unambiguous in any context. The operator
# adds more with TROUPE_CONTENT_FILTER_TERMS (comma-separated, matched as whole words,
# case-insensitive).
BLOCKED_TERMS = (
    "kill yourself", "how to make a bomb", "how to build a bomb", "make a pipe bomb", "child sexual",
    "child porn", "how to make meth", "synthesize sarin", "buy a gun illegally",
)
CONTENT_TERMS_ENV = "TROUPE_CONTENT_FILTER_TERMS"


def _luhn(digits: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char)
        if index % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def redact(text: str) -> tuple[str, dict[str, int]]:
    """Emails, card numbers (13-19 digits passing the Luhn check) and phone numbers
    (7-15 digits, grouped or with a +country prefix) replaced by a label."""
    counts = {"email": 0, "card": 0, "phone": 0}

    def sub(kind: str, check: Callable[[str], bool] = lambda _: True) -> Callable[[re.Match[str]], str]:
        def replace_(match: re.Match[str]) -> str:
            if not check(match.group(0)):
                return match.group(0)
            counts[kind] += 1
            return REDACTED[kind]
        return replace_

    text = _EMAIL.sub(sub("email"), text)
    text = _CARD.sub(sub("card", lambda m: _luhn(re.sub(r"\D", "", m))), text)
    text = _PHONE.sub(sub("phone", lambda m: 7 <= len(re.sub(r"\D", "", m)) <= 15 and not _DATE.fullmatch(m)),
                      text)
    return text, counts


def _terms() -> tuple[str, ...]:
    extra = [t.strip().lower() for t in os.environ.get(CONTENT_TERMS_ENV, "").split(",") if t.strip()]
    return BLOCKED_TERMS + tuple(extra)


def blocked_term(text: str) -> str | None:
    """The first content-filter term found in ``text`` (whole words, any case), if any."""
    lowered = " ".join(text.lower().split())
    for term in _terms():
        if re.search(rf"(?<!\w){re.escape(term)}(?!\w)", lowered):
            return term
    return None


class Blocked(ProviderError):
    """The content filter refused the input (VAL_001: the caller's to change) or the
    model's answer (SYS_003: the model's)."""

    def __init__(self, where: str, term: str) -> None:
        super().__init__("VAL_001" if where == "input" else "SYS_003",
                         f"blocked by the agent's content filter: the {where} contains a blocked term ({term!r})",
                         retryable=False)


# ---------------------------------------------------------------------------- prompt


def build_messages(*, config: dict[str, Any], system: str | None, prompt: str, history: list[ChatMessage],
                   knowledge: list[dict[str, str]]) -> list[ChatMessage]:
    parts: list[str] = []
    if system:
        parts.append(str(system))
    instructions = [str(i) for i in config.get("customInstructions") or [] if str(i).strip()]
    if instructions:
        parts.append("Instructions:\n" + "\n".join(f"- {i}" for i in instructions))
    if knowledge:
        parts.append("Knowledge (excerpts from your sources; use them when they answer the question):\n"
                     + "\n\n".join(f"[{n}] ({k['source']}) {k['content']}" for n, k in enumerate(knowledge, 1)))
    fmt = config.get("responseFormat")
    if fmt in ("json", "structured"):
        schema = config.get("responseSchema")
        parts.append("Answer with one JSON value only, no prose" + (
            f", matching this JSON Schema: {json.dumps(schema)}" if fmt == "structured" and schema else "") + ".")
    messages = [ChatMessage("system", "\n\n".join(parts))] if parts else []
    for example in config.get("fewShotExamples") or []:
        messages += [ChatMessage("user", str(example.get("input", ""))),
                     ChatMessage("assistant", str(example.get("output", "")))]
    return messages + history + [ChatMessage("user", prompt)]


# ---------------------------------------------------------------------------- tools


@dataclass(frozen=True)
class AgentTool:
    """One of the agent's tools as offered to the model (``name`` is the function name)."""

    name: str
    description: str
    parameters: dict[str, Any]
    spec: Any  # troupe.engine.contract.ToolSpec

    def definition(self) -> ToolDef:
        return ToolDef(self.name, self.description, self.parameters)


def function_name(name: str, tool_id: str, taken: set[str]) -> str:
    """A function name the three APIs accept (``^[a-zA-Z0-9_-]{1,64}$``), unique per call."""
    base = re.sub(r"[^A-Za-z0-9_-]+", "_", name).strip("_")[:48] or "tool"
    candidate = base if base not in taken else f"{base}_{tool_id.replace('-', '')[:8]}"
    taken.add(candidate)
    return candidate


def parameters_of(kind: str, schema: dict[str, Any] | None) -> dict[str, Any]:
    """The function's parameters: the tool's input schema (an object), else a loose object."""
    declared = (schema or {}).get("input")
    if isinstance(declared, dict) and declared.get("type") == "object":
        return declared
    if kind == "calculator":
        return {"type": "object", "properties": {"expression": {"type": "string",
                                                               "description": "an arithmetic expression"}},
                "required": ["expression"]}
    return {"type": "object", "properties": {}}


ToolRunner = Callable[[AgentTool, dict[str, Any], str], Awaitable[tuple[bool, Any]]]

# ---------------------------------------------------------------------------- response format


def format_problem(text: str, config: dict[str, Any]) -> str | None:
    """Why ``text`` is not the answer ``responseFormat`` asks for, or None."""
    fmt = config.get("responseFormat")
    if fmt not in ("json", "structured"):
        return None
    try:
        value = json.loads(_strip_fence(text))
    except ValueError as exc:
        return f"the answer is not valid JSON ({exc})"
    schema = config.get("responseSchema")
    if fmt == "structured":
        if schema:
            import jsonschema

            error = jsonschema.exceptions.best_match(
                jsonschema.validators.validator_for(schema)(schema).iter_errors(value))
            if error is not None:
                where = "/".join(str(p) for p in error.absolute_path) or "(root)"
                return f"the answer does not match the response schema at {where}: {error.message}"
        elif not isinstance(value, dict):
            return "the answer must be a JSON object"
    return None


def _strip_fence(text: str) -> str:
    """Models often wrap JSON in a Markdown code fence."""
    match = re.fullmatch(r"\s*```(?:json)?\s*(.*?)\s*```\s*", text, re.S)
    return match.group(1) if match else text


# ---------------------------------------------------------------------------- the loop


@dataclass
class LoopResult:
    text: str
    model: str
    provider: str
    simulated: bool
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    calls: list[dict[str, Any]] = field(default_factory=list)
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    retries: int = 0
    redactions: dict[str, int] = field(default_factory=dict)
    parsed: Any = None

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


Call = Callable[[CompletionRequest], Awaitable[CompletionResult]]


class ModelCall:
    """One model call within the call's deadline; real providers under the one retry
    policy (troupe.providers.retry), the offline provider once (its injected failures
    exercise the workflow's retry policy)."""

    def __init__(self, provider: Any, deadline: float) -> None:
        self.provider = provider
        self.deadline = deadline
        self.retries: Any = None
        if getattr(provider, "name", "") != "simulated":
            from troupe.providers.retry import Retries

            self.retries = Retries(deadline)

    @property
    def retries_taken(self) -> int:
        return len(self.retries.waits) if self.retries is not None else 0

    async def _once(self, request: CompletionRequest) -> CompletionResult:
        remaining = max(0.1, self.deadline - time.monotonic())
        return await asyncio.wait_for(self.provider.complete(replace(request, timeout_s=remaining)),
                                      timeout=remaining)

    async def __call__(self, request: CompletionRequest) -> CompletionResult:
        if self.retries is None:
            return await self._once(request)
        return await self.retries.call(lambda: self._once(request))


async def run(*, call: Call, request: CompletionRequest, config: dict[str, Any], tools: list[AgentTool],
              run_tool: ToolRunner, idempotency_prefix: str) -> LoopResult:
    """The loop over one prepared request (messages already built). ``call`` is one
    model call under the retry policy; ``run_tool`` runs one tool call."""
    safety = config.get("safety") or {}
    messages = list(request.messages)
    redactions = {"email": 0, "card": 0, "phone": 0}
    if safety.get("contentFilter", True):
        term = blocked_term(messages[-1].content)
        if term:
            raise Blocked("input", term)
    if safety.get("personalDataFilter", True):
        # Memory holds earlier inputs as they were sent: every turn is redacted, not only this one.
        for index, message in enumerate(messages):
            if message.role != "system":
                text, counts = redact(message.content)
                messages[index] = replace(message, content=text)
                redactions = {k: redactions[k] + v for k, v in counts.items()}
    by_name = {t.name: t for t in tools}
    outcome: LoopResult | None = None

    async def ask(msgs: list[ChatMessage], offer: bool) -> CompletionResult:
        nonlocal outcome
        result = await call(replace(request, messages=msgs,
                                    tools=[t.definition() for t in tools] if offer else []))
        if outcome is None:
            outcome = LoopResult(text="", model=result.model, provider=result.provider, simulated=result.simulated)
        outcome.prompt_tokens += result.prompt_tokens
        outcome.completion_tokens += result.completion_tokens
        outcome.cost += result.cost_usd
        outcome.model = result.model
        outcome.calls.append({"promptTokens": result.prompt_tokens, "completionTokens": result.completion_tokens,
                              "cost": result.cost_usd, "model": result.model,
                              "pricing": result.raw.get("pricing"), "toolCalls": len(result.tool_calls)})
        return result

    result = await ask(messages, bool(tools))
    rounds = 0
    while result.tool_calls and tools:
        rounds += 1
        messages.append(ChatMessage("assistant", result.text, tool_calls=tuple(result.tool_calls)))
        for tool_call in result.tool_calls:
            messages.append(await _run_call(tool_call, by_name, run_tool, outcome, rounds, idempotency_prefix))
        result = await ask(messages, rounds < MAX_TOOL_ROUNDS)
    assert outcome is not None
    text = result.text
    problem = format_problem(text, config)
    if problem:
        # One repair attempt: the model sees its answer and what is wrong with it.
        repair = messages + [ChatMessage("assistant", text),
                             ChatMessage("user", f"Your answer cannot be used: {problem}. Reply again with "
                                                 "only the corrected JSON, nothing else.")]
        text = (await ask(repair, False)).text
        problem = format_problem(text, config)
        if problem:
            raise ProviderError("SYS_003", f"responseFormat {config.get('responseFormat')}: {problem} "
                                           "(also after one repair attempt)", retryable=False)
    if config.get("responseFormat") in ("json", "structured"):
        text = _strip_fence(text)
        outcome.parsed = json.loads(text)
    if safety.get("contentFilter", True):
        term = blocked_term(text)
        if term:
            raise Blocked("answer", term)
    if safety.get("personalDataFilter", True):
        text, counts = redact(text)
        redactions = {k: redactions[k] + v for k, v in counts.items()}
        if outcome.parsed is not None and any(counts.values()):
            outcome.parsed = json.loads(text) if _parses(text) else outcome.parsed
    outcome.text = text
    outcome.redactions = {k: v for k, v in redactions.items() if v}
    return outcome


def _parses(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


async def _run_call(tool_call: ToolCall, by_name: dict[str, AgentTool], run_tool: ToolRunner,
                    outcome: LoopResult | None, round_: int, prefix: str) -> ChatMessage:
    tool = by_name.get(tool_call.name)
    if tool is None:
        ok, output = False, f"no tool named {tool_call.name!r} is available"
    else:
        ok, output = await run_tool(tool, tool_call.arguments, f"{prefix}:{round_}:{tool_call.id}")
    if outcome is not None:
        outcome.tool_calls.append({"round": round_, "name": tool_call.name, "ok": ok,
                                   "toolId": getattr(tool.spec, "id", None) if tool else None})
    content = json.dumps(output, default=str) if ok else f"error: {output}"
    return ChatMessage("tool", content[:MAX_TOOL_RESULT_CHARS], tool_call_id=tool_call.id, name=tool_call.name)
