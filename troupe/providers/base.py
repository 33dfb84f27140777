"""The interface every model provider implements. Agent actors call providers
through it; nothing else talks to an LLM."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

Role = Literal["system", "user", "assistant", "tool"]


@dataclass(frozen=True)
class ToolCall:
    """A function call the model asked for; ``id`` pairs it with its result."""

    id: str
    name: str
    arguments: dict[str, Any]


@dataclass(frozen=True)
class ToolDef:
    """A function offered to the model (OpenAI tools, Anthropic tools, Gemini
    function declarations); ``parameters`` is a JSON Schema object."""

    name: str
    description: str
    parameters: dict[str, Any]


@dataclass(frozen=True)
class ChatMessage:
    role: Role
    content: str
    # An assistant turn that asked for tools, and a ``tool`` turn answering one of them.
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None
    name: str | None = None


@dataclass(frozen=True)
class CompletionRequest:
    model: str
    messages: list[ChatMessage]
    temperature: float = 0.7
    max_tokens: int = 1024
    top_p: float = 1.0
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    stop: list[str] = field(default_factory=list)
    response_format: Literal["text", "json", "structured"] = "text"
    timeout_s: float = 60.0
    extra: dict[str, Any] = field(default_factory=dict)
    tools: list[ToolDef] = field(default_factory=list)


@dataclass(frozen=True)
class CompletionResult:
    text: str
    model: str
    provider: str
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    latency_ms: float
    # True for the offline provider: every response it produces says so.
    simulated: bool = False
    raw: dict[str, Any] = field(default_factory=dict)
    tool_calls: list[ToolCall] = field(default_factory=list)

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class ProviderError(Exception):
    """A provider call failed; ``code`` is one of the spec's codes (SYS_003,
    SYS_006, SYS_007, SYS_004, BIZ_002) so retry policies can match it."""

    def __init__(self, code: str, message: str, *, retryable: bool = True,
                 retry_after: float | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.retryable = retryable
        # Seconds the server asked us to wait (its Retry-After header), if it said.
        self.retry_after = retry_after

    def __reduce__(self):
        return (ProviderError, (self.code, str(self)), {"retryable": self.retryable, "retry_after": self.retry_after})


class Provider(Protocol):
    name: str

    async def complete(self, request: CompletionRequest) -> CompletionResult: ...

    def context_window(self, model: str) -> int | None:
        """Known context window of ``model`` in tokens, or None if unknown."""
        ...
