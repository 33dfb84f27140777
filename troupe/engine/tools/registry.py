"""The tool runtimes, one per tool type, registered with ``tool_runtime``.

A runtime is ``fn(call: ToolCall) -> NodeResult``: it gets the tool's opened
configuration and its validated input, and never raises for an application
failure. Built-in runtimes live in this package (one module per type);
``custom`` tools run a plugin found through the ``troupe.tools`` entry point
group (troupe.engine.tools.custom)."""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from troupe.engine.contract import NodeResult, ToolSpec

# Each module registers the type(s) it runs when imported.
BUILTIN_MODULES = ("http", "database", "files", "code", "scraper", "calculator", "translator", "custom")


@dataclass(slots=True)
class ToolContext:
    """Who calls a tool and on whose behalf: the company whose storage, rate limits and
    caches apply, the caller (user or agent), and the side-effect idempotency key."""

    company_id: str | None = None
    user_id: str | None = None
    agent_id: str | None = None
    task_id: str | None = None
    idempotency_key: str | None = None
    attempt: int = 0
    # The HTTP test route may skip input validation (``validateSchema: false``).
    validate_input: bool = True


@dataclass(slots=True)
class ToolCall:
    """One call as a runtime sees it: secrets already opened, input already validated."""

    spec: ToolSpec
    configuration: dict[str, Any]
    input: Any
    context: ToolContext = field(default_factory=ToolContext)
    # Replaces this call's opened secrets by ``********`` (for anything a runtime stores).
    scrub: Callable[[Any], Any] = lambda value: value

    @property
    def timeout(self) -> float:
        return float(self.configuration.get("timeout") or 30)

    def section(self, name: str) -> dict[str, Any]:
        value = self.configuration.get(name)
        return value if isinstance(value, dict) else {}


ToolRuntime = Callable[[ToolCall], NodeResult]
_RUNTIMES: dict[str, ToolRuntime] = {}
_loaded = False
_lock = threading.Lock()


def tool_runtime(*types: str) -> Callable[[ToolRuntime], ToolRuntime]:
    def register(fn: ToolRuntime) -> ToolRuntime:
        for type_ in types:
            _RUNTIMES[type_] = fn
        return fn

    return register


def runtime_for(type_: str) -> ToolRuntime | None:
    global _loaded
    if not _loaded:
        with _lock:
            if not _loaded:
                for module in BUILTIN_MODULES:
                    importlib.import_module(f"troupe.engine.tools.{module}")
                _loaded = True
    return _RUNTIMES.get(type_)


def tool_types() -> list[str]:
    runtime_for("")
    return sorted(_RUNTIMES)


class ToolFailure(Exception):
    """Raised by a runtime for an expected failure (becomes ``NodeResult.fail``)."""

    def __init__(self, code: str, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retryable = retryable
