"""The run contract: the one definition of what a workflow graph is made of and of
what passes between the driver, a node task and an AgentActor.

- Node, edge, strategy and error-handling types: the only definition; the HTTP
  schemas, the validator and the driver import them from here.
- ``NodeSpec``: what the driver hands one node task (one Ray task per attempt).
- ``NodeResult``: what a node task (or an AgentActor) hands back. A node never
  raises for an application failure; it returns ``NodeResult.fail(...)`` so the
  driver applies the workflow's retry policy by error code.

This module is imported by every node worker and by agent actors, whose memory
is budgeted: it must stay standard-library only (no pydantic, no SQLAlchemy).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, get_args

NodeType = Literal["input", "agent", "tool", "output", "condition", "loop", "delay", "webhook", "email"]
EdgeType = Literal["default", "conditional", "success", "error"]
Strategy = Literal["sequential", "parallel", "conditional", "hybrid"]
ErrorHandling = Literal["stop", "continue", "retry", "fallback"]
Operator = Literal["equals", "not_equals", "contains", "greater_than", "less_than", "exists"]
Logic = Literal["and", "or"]

NODE_TYPES: frozenset[str] = frozenset(get_args(NodeType))
EDGE_TYPES: frozenset[str] = frozenset(get_args(EdgeType))
STRATEGIES: frozenset[str] = frozenset(get_args(Strategy))
ERROR_HANDLING: frozenset[str] = frozenset(get_args(ErrorHandling))
OPERATORS: frozenset[str] = frozenset(get_args(Operator))
LOGICS: frozenset[str] = frozenset(get_args(Logic))
# Nodes whose effect leaves the system: they carry an idempotency key per run, node and iteration.
SIDE_EFFECT_TYPES: frozenset[str] = frozenset({"webhook", "email", "tool"})
# Nodes the driver evaluates itself (bookkeeping, no work of their own), still recorded like any node.
DRIVER_TYPES: frozenset[str] = frozenset({"loop"})
MAX_LOOP_ITERATIONS = 10_000
# Nodes that mostly wait (on a model, a remote host, a clock) ask Ray for a sliver of a CPU so many
# overlap; the rest compute and ask for a whole one, as any Ray task does, so a wide wave of them
# queues on the warm workers instead of making Ray start a process per node.
WAITING_TYPES: frozenset[str] = frozenset({"agent", "tool", "webhook", "email", "delay"})
WAITING_NODE_CPUS = 0.05


# configuration.overridableVariables: the names of configuration.variables a run may set
# (execute's ``variables``). Any other name is refused, so whoever may only execute a
# workflow cannot redirect what its owner configured (a webhook's URL, a recipient).
OVERRIDABLE_VARIABLES = "overridableVariables"


def refused_variables(variables: dict[str, Any] | None, *, configuration: dict[str, Any] | None,
                      schedule: dict[str, Any] | None = None,
                      triggers: list[Any] | None = None) -> list[str]:
    """Names in a run's ``variables`` the workflow does not let a run override: neither
    declared in ``configuration.overridableVariables`` nor given the very value the
    workflow itself holds for them (its ``configuration.variables``, its schedule's or a
    trigger's ``variables``: all written by someone who may change the workflow)."""
    config = configuration or {}
    declared = config.get(OVERRIDABLE_VARIABLES)
    allowed = {str(name) for name in declared} if isinstance(declared, list) else set()
    own = [config.get("variables"), (schedule or {}).get("variables"),
           *(((t.get("configuration") or {}).get("variables") if isinstance(t, dict) else None)
             for t in triggers or [])]
    sources = [source for source in own if isinstance(source, dict)]
    return sorted(name for name, value in (variables or {}).items()
                  if name not in allowed and not any(name in source and source[name] == value
                                                     for source in sources))


@dataclass(slots=True)
class ToolSpec:
    """A tool as a node task needs it: sealed values stay sealed until the outbound call."""

    id: str
    type: str
    configuration: dict[str, Any] = field(default_factory=dict)
    schema: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class NodeSpec:
    """One attempt of one node, as the driver submits it."""

    type: str
    node_id: str
    task_id: str
    config: dict[str, Any]
    # What the node may read besides its rendered config: ``input`` (the run's input),
    # ``prev`` (the activating node's output) and, for condition nodes, the full template context.
    context: dict[str, Any]
    company_id: str | None = None
    iteration: int = 0
    attempt: int = 0
    timeout: float = 300.0
    agent_id: str | None = None
    conditions: list[dict[str, Any]] | None = None
    idempotency_key: str | None = None
    tool: ToolSpec | None = None


@dataclass(slots=True)
class NodeResult:
    ok: bool
    output: Any = None
    code: str | None = None
    message: str | None = None
    retryable: bool = True
    meta: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def success(cls, output: Any, **meta: Any) -> NodeResult:
        return cls(True, output, meta=meta)

    @classmethod
    def fail(cls, code: str, message: str, *, retryable: bool = True, **meta: Any) -> NodeResult:
        return cls(False, code=code, message=message, retryable=retryable, meta=meta)

    def as_error(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message}
