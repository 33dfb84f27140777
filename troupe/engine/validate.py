"""Pure structural validation of a workflow graph (no database, no HTTP).

``validate_graph(nodes, edges, configuration, schedule)`` returns every problem
at once; the HTTP layer reports them, activation refuses a graph with any
``severity == "error"`` problem, and the engine calls it before running.
It accepts raw JSON (whatever is stored), so it never assumes the shapes the
API enforces.

Node ``data`` keys per node type (the engine executes against the same keys):

- ``input``: none required. The run's input becomes the node's output.
- ``output``: ``configuration.value`` (optional template, e.g. ``"{{nodes.summarise.output}}"``;
  syntax in troupe.engine.templates); without it, the output is the output of the node(s) feeding it.
- ``agent``: either ``data.agentId`` (an agent the caller may see) or an inline
  ``data.configuration.provider`` + ``data.configuration.model`` (optional
  ``systemPrompt``, ``temperature``, ``maxTokens``); ``configuration.prompt`` is the
  prompt template.
- ``tool``: ``data.toolId``; ``configuration.input`` is an object whose string values are templates.
- ``condition``: ``data.conditions`` = non-empty list of ``{field, operator, value, logic?}``;
  operators: equals, not_equals, contains, greater_than, less_than, exists; ``logic``
  (and|or) joins a condition to the previous one. Outgoing edges of type
  ``conditional`` carry ``condition: "true"`` or ``"false"`` (the branch taken).
- ``loop``: ``configuration.maxIterations`` (integer 1..10000, required: the bound),
  and either ``configuration.items`` (template naming a list: one iteration per
  item, at most maxIterations) or ``configuration.while`` (conditions, same shape as a
  condition node's, re-evaluated before each iteration). The loop body is
  ``configuration.body`` (a list of node ids) if given, else the nodes on cycles back
  to the loop node (``troupe.engine.graph.loop_body``); it must not be empty nor
  hold a loop. The loop's other outgoing edges leave the loop.
- ``delay``: ``configuration.seconds`` (number, 0 < seconds <= limits.max_delay_seconds).
- ``webhook``: ``configuration.url`` (http/https URL, or a template such as
  ``"{{vars.hookUrl}}"``), ``method`` (GET|POST|PUT|PATCH|DELETE, default POST), ``headers`` (object of strings), ``body`` (template or JSON).
- ``email``: ``configuration.to`` (address or list of addresses, templates allowed),
  ``subject``, ``body`` (templates).

Edges: ``type`` is default|conditional|success|error (missing = default). A
``conditional`` edge needs ``condition``: from a condition node "true"/"false",
from any other node a dot path into the source's output whose truthiness gates the edge.
Cycles are allowed only through a ``loop`` node, and only inside its body.

This is the one graph validator: ``/validate``, activation and execute call it,
and a graph it reports no ``error`` for is one the driver can run.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from troupe.engine import graph
from troupe.engine.contract import (
    EDGE_TYPES,
    ERROR_HANDLING,
    LOGICS,
    MAX_LOOP_ITERATIONS,
    NODE_TYPES,
    OPERATORS,
    STRATEGIES,
)

WEBHOOK_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE"})

Severity = Literal["error", "warning"]
# The spec's ValidationError.type: a coarse category beside our precise ``code``.
Category = Literal["missing_connection", "invalid_config", "circular_dependency", "resource_limit"]

_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_TEMPLATE = re.compile(r"\{\{.*\}\}")


@dataclass(frozen=True)
class Limits:
    max_nodes: int = 500
    max_edges: int = 2000
    max_document_bytes: int = 1_048_576
    max_loop_iterations: int = MAX_LOOP_ITERATIONS
    max_delay_seconds: float = 30 * 86400


@dataclass(frozen=True)
class Problem:
    code: str
    message: str
    type: Category
    severity: Severity = "error"
    node_id: str | None = None
    edge_id: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def is_valid_url(value: object) -> bool:
    if not isinstance(value, str) or len(value) > 2048:
        return False
    try:
        parts = urlsplit(value)
        _ = parts.port  # raises on a malformed port
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname) and not any(c.isspace() for c in value)


def cron_problem(cron: object) -> str | None:
    from croniter import croniter

    if not isinstance(cron, str) or not cron.strip():
        return "cron expression is required"
    if not croniter.is_valid(cron):
        return f"invalid cron expression {cron!r}"
    return None


def timezone_problem(tz: object) -> str | None:
    if not isinstance(tz, str) or not tz:
        return "timezone is required"
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        return f"unknown timezone {tz!r}"
    return None


def validate_graph(nodes: Any, edges: Any, configuration: Any = None, schedule: Any = None,
                   limits: Limits = Limits()) -> list[Problem]:
    problems: list[Problem] = []
    add = problems.append
    nodes = nodes if isinstance(nodes, list) else []
    edges = edges if isinstance(edges, list) else []

    if len(nodes) > limits.max_nodes:
        add(Problem("too_many_nodes", f"{len(nodes)} nodes; at most {limits.max_nodes} allowed", "resource_limit"))
    if len(edges) > limits.max_edges:
        add(Problem("too_many_edges", f"{len(edges)} edges; at most {limits.max_edges} allowed", "resource_limit"))
    try:
        size = len(json.dumps({"nodes": nodes, "edges": edges, "configuration": configuration},
                              default=str).encode())
    except (TypeError, ValueError):
        size = 0
    if size > limits.max_document_bytes:
        add(Problem("document_too_large", f"workflow definition is {size} bytes; at most "
                    f"{limits.max_document_bytes} allowed", "resource_limit"))

    types: dict[str, str] = {}
    loops: dict[str, dict] = {}
    for index, node in enumerate(nodes):
        if not isinstance(node, dict) or not isinstance(node.get("id"), str) or not node["id"]:
            add(Problem("invalid_node", f"node #{index} has no string id", "invalid_config"))
            continue
        nid = node["id"]
        if nid in types:
            add(Problem("duplicate_node_id", f"node id {nid!r} is used more than once", "invalid_config",
                        node_id=nid))
            continue
        ntype = node.get("type")
        types[nid] = ntype if isinstance(ntype, str) else ""
        if ntype not in NODE_TYPES:
            add(Problem("unknown_node_type", f"node {nid!r} has unknown type {ntype!r}", "invalid_config",
                        node_id=nid))
            continue
        _check_node(node, nid, ntype, limits, add)
        if ntype == "loop" and _loop_body_readable(node):
            loops[nid] = node

    adjacency: dict[str, list[str]] = {nid: [] for nid in types}
    outgoing_edges: dict[str, list[dict]] = {nid: [] for nid in types}
    linked: list[dict] = []  # the edges between known nodes
    seen_edges: set[str] = set()
    for index, edge in enumerate(edges):
        if not isinstance(edge, dict) or not isinstance(edge.get("id"), str) or not edge["id"]:
            add(Problem("invalid_edge", f"edge #{index} has no string id", "invalid_config"))
            continue
        eid = edge["id"]
        if eid in seen_edges:
            add(Problem("duplicate_edge_id", f"edge id {eid!r} is used more than once", "invalid_config",
                        edge_id=eid))
            continue
        seen_edges.add(eid)
        source, target = edge.get("source"), edge.get("target")
        dangling = False
        for end, ref in (("source", source), ("target", target)):
            if ref not in types:
                add(Problem(f"edge_{end}_missing", f"edge {eid!r} {end} {ref!r} is not a node of this workflow",
                            "missing_connection", edge_id=eid))
                dangling = True
        etype = edge.get("type") or "default"
        if etype not in EDGE_TYPES:
            add(Problem("unknown_edge_type", f"edge {eid!r} has unknown type {etype!r}", "invalid_config",
                        edge_id=eid))
        condition = edge.get("condition")
        if etype == "conditional":
            if not isinstance(condition, str) or not condition.strip():
                add(Problem("conditional_edge_without_condition", f"conditional edge {eid!r} has no condition",
                            "invalid_config", edge_id=eid))
            elif not dangling and types.get(source) == "condition" and condition not in ("true", "false"):
                add(Problem("invalid_edge_condition", f"edge {eid!r} leaves a condition node: its condition "
                            "must be \"true\" or \"false\"", "invalid_config", edge_id=eid))
        if not dangling:
            adjacency[source].append(target)
            outgoing_edges[source].append(edge)
            linked.append(edge)

    inputs = [nid for nid, t in types.items() if t == "input"]
    if types and not inputs:
        add(Problem("no_input_node", "the workflow has no input node", "missing_connection"))
    if not types:
        add(Problem("no_input_node", "the workflow has no nodes: add an input node", "missing_connection"))
    if not any(t == "output" for t in types.values()):
        add(Problem("no_output_node", "the workflow has no output node", "missing_connection"))

    if inputs:
        reached = _reachable(inputs, adjacency)
        for nid in types:
            if nid not in reached:
                add(Problem("unreachable_node", f"node {nid!r} cannot be reached from an input node",
                            "missing_connection", node_id=nid))

    # Cycles must pass through a loop node: drop loop nodes, then any remaining
    # strongly connected component with a cycle is a cycle that avoids them all.
    non_loop = {nid: [t for t in targets if types.get(t) != "loop"]
                for nid, targets in adjacency.items() if types.get(nid) != "loop"}
    bypasses = _cycles(non_loop)
    for component in bypasses:
        add(Problem("cycle_without_loop", "cycle through " + " -> ".join(component) +
                    " does not pass through a loop node", "circular_dependency", node_id=component[0]))
    _check_loop_bodies(loops, types, linked, add)
    if not bypasses:
        _check_main_graph_acyclic(types, loops, adjacency, linked, add)

    for nid, ntype in types.items():
        if ntype not in ("output", "") and not outgoing_edges.get(nid):
            add(Problem("dead_end", f"node {nid!r} has no outgoing edge; its result is not used",
                        "missing_connection", severity="warning", node_id=nid))
        if ntype == "condition" and outgoing_edges.get(nid) and \
                not any((e.get("type") or "default") == "conditional" for e in outgoing_edges[nid]):
            add(Problem("condition_without_branches", f"condition node {nid!r} has no conditional edge",
                        "missing_connection", severity="warning", node_id=nid))

    _check_configuration(configuration, add)
    _check_schedule(schedule, add)
    return problems


def errors_of(problems: Iterable[Problem]) -> list[Problem]:
    return [p for p in problems if p.severity == "error"]


# --------------------------------------------------------------------------- nodes


def _check_node(node: dict, nid: str, ntype: str, limits: Limits, add) -> None:
    data = node.get("data")
    if not isinstance(data, dict):
        add(Problem("invalid_node", f"node {nid!r} has no data object", "invalid_config", node_id=nid))
        return
    config = data.get("configuration")
    if config is None:
        config = {}
    if not isinstance(config, dict):
        add(Problem("invalid_node", f"node {nid!r}: data.configuration must be an object", "invalid_config",
                    node_id=nid))
        config = {}

    def bad(code: str, message: str) -> None:
        add(Problem(code, f"node {nid!r}: {message}", "invalid_config", node_id=nid))

    if ntype == "agent":
        agent_id = data.get("agentId")
        inline = isinstance(config.get("provider"), str) and config["provider"].strip() and \
            isinstance(config.get("model"), str) and config["model"].strip()
        if agent_id is None and not inline:
            bad("agent_without_reference", "an agent node needs data.agentId or an inline "
                "configuration.provider and configuration.model")
        elif agent_id is not None and (not isinstance(agent_id, str) or not _UUID.match(agent_id)):
            bad("invalid_reference", f"agentId {agent_id!r} is not a UUID")
        if "prompt" in config and not isinstance(config["prompt"], str):
            bad("invalid_config", "configuration.prompt must be a string")
    elif ntype == "tool":
        tool_id = data.get("toolId")
        if tool_id is None:
            bad("tool_without_reference", "a tool node needs data.toolId")
        elif not isinstance(tool_id, str) or not _UUID.match(tool_id):
            bad("invalid_reference", f"toolId {tool_id!r} is not a UUID")
        if "input" in config and not isinstance(config["input"], dict):
            bad("invalid_config", "configuration.input must be an object")
    elif ntype == "condition":
        conditions = data.get("conditions")
        if not isinstance(conditions, list) or not conditions:
            bad("condition_without_conditions", "a condition node needs a non-empty data.conditions list")
        else:
            _check_conditions(conditions, "data.conditions", bad)
    elif ntype == "loop":
        bound = config.get("maxIterations")
        if bound is None:
            bad("loop_without_bound", "a loop node needs configuration.maxIterations")
        elif isinstance(bound, bool) or not isinstance(bound, int) or \
                not 1 <= bound <= limits.max_loop_iterations:
            bad("loop_without_bound", f"configuration.maxIterations must be an integer from 1 to "
                f"{limits.max_loop_iterations}")
        if "items" not in config and "while" not in config:
            bad("loop_without_items_or_while", "a loop node needs configuration.items (a list) or "
                "configuration.while (conditions)")
        if "items" in config and not isinstance(config["items"], str):
            bad("invalid_config", "configuration.items must be a template string naming a list")
        if "while" in config:
            if not isinstance(config["while"], list) or not config["while"]:
                bad("invalid_config", "configuration.while must be a non-empty list of conditions")
            else:
                _check_conditions(config["while"], "configuration.while", bad)
        if "body" in config and not _is_id_list(config["body"]):
            bad("invalid_config", "configuration.body must be a list of distinct node ids")
    elif ntype == "delay":
        seconds = config.get("seconds")
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or \
                not 0 < seconds <= limits.max_delay_seconds:
            bad("invalid_delay", f"configuration.seconds must be a number above 0 and at most "
                f"{int(limits.max_delay_seconds)}")
    elif ntype == "webhook":
        url = config.get("url")
        # A template (e.g. "{{vars.hookUrl}}") is resolved, and checked by the outbound guard, at run time.
        if not is_valid_url(url) and not (isinstance(url, str) and _TEMPLATE.fullmatch(url.strip())):
            bad("webhook_without_url", "configuration.url must be an http(s) URL or a template")
        method = config.get("method", "POST")
        if method not in WEBHOOK_METHODS:
            bad("invalid_config", f"configuration.method {method!r} is not one of {sorted(WEBHOOK_METHODS)}")
        headers = config.get("headers", {})
        if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
            bad("invalid_config", "configuration.headers must be an object of strings")
    elif ntype == "email":
        to = config.get("to")
        recipients = [to] if isinstance(to, str) else to
        if not isinstance(recipients, list) or not recipients or not all(
                isinstance(r, str) and (_EMAIL.match(r) or _TEMPLATE.search(r)) for r in recipients):
            bad("email_without_recipient", "configuration.to must be an address (or template) or a list of them")
        for key in ("subject", "body"):
            if key in config and not isinstance(config[key], str):
                bad("invalid_config", f"configuration.{key} must be a string")
    elif ntype == "output":
        if "value" in config and not isinstance(config["value"], str | dict | list):
            bad("invalid_config", "configuration.value must be a template string, object or list")


def _check_conditions(conditions: list, where: str, bad) -> None:
    for i, cond in enumerate(conditions):
        if not isinstance(cond, dict):
            bad("invalid_condition", f"{where}[{i}] must be an object")
            continue
        if not isinstance(cond.get("field"), str) or not cond["field"].strip():
            bad("invalid_condition", f"{where}[{i}].field is required")
        if cond.get("operator") not in OPERATORS:
            bad("unknown_operator", f"{where}[{i}].operator {cond.get('operator')!r} is not one of "
                f"{sorted(OPERATORS)}")
        if cond.get("logic") is not None and cond["logic"] not in LOGICS:
            bad("unknown_logic", f"{where}[{i}].logic {cond['logic']!r} is not 'and' or 'or'")
        if cond.get("operator") != "exists" and "value" not in cond:
            bad("invalid_condition", f"{where}[{i}].value is required for operator {cond.get('operator')!r}")


# --------------------------------------------------------------------------- loops


def _is_id_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) and v for v in value) and \
        len(set(value)) == len(value)


def _loop_body_readable(node: dict) -> bool:
    """Whether ``graph.loop_body`` can read this loop (its own shape problems are reported by _check_node)."""
    data = node.get("data")
    config = data.get("configuration") if isinstance(data, dict) else None
    return isinstance(data, dict) and (config is None or (
        isinstance(config, dict) and ("body" not in config or _is_id_list(config["body"]))))


def _check_loop_bodies(loops: dict[str, dict], types: dict[str, str], edges: list[dict], add) -> None:
    """Each loop repeats a non-empty body of known, non-loop nodes (the driver runs bodies flat)."""
    for lid, loop in loops.items():
        body = graph.loop_body(loop, edges)
        if not body:
            add(Problem("loop_without_body", f"loop node {lid!r} has no body: no node lies on a cycle back to it "
                        "(or list them in configuration.body)", "missing_connection", node_id=lid))
        for nid in body:
            if nid not in types:
                add(Problem("invalid_loop_body", f"loop node {lid!r}: configuration.body names unknown node "
                            f"{nid!r}", "invalid_config", node_id=lid))
            elif types[nid] == "loop":
                add(Problem("nested_loop", f"loop node {lid!r}: its body holds loop node {nid!r}; loops cannot "
                            "be nested or contain themselves", "invalid_config", node_id=lid))


def _check_main_graph_acyclic(types: dict[str, str], loops: dict[str, dict], adjacency: dict[str, list[str]],
                              edges: list[dict], add) -> None:
    """Outside loop bodies the graph must be acyclic: a cycle through a loop node whose nodes
    are not all in its ``configuration.body`` would never be scheduled."""
    owned = graph.body_nodes(list(loops.values()), edges)
    main = {nid: [t for t in adjacency[nid] if t not in owned] for nid in types if nid not in owned}
    for component in _cycles(main):
        add(Problem("cycle_outside_loop_body", "cycle through " + " -> ".join(component) + " lies outside "
                    "every loop body: list its nodes in the loop's configuration.body", "circular_dependency",
                    node_id=component[0]))


# --------------------------------------------------------------------------- configuration, schedule


def _check_configuration(configuration: Any, add) -> None:
    if configuration is None:
        return
    if not isinstance(configuration, dict):
        add(Problem("invalid_configuration", "configuration must be an object", "invalid_config"))
        return
    strategy = configuration.get("strategy", "sequential")
    if strategy not in STRATEGIES:
        add(Problem("unknown_strategy", f"configuration.strategy {strategy!r} is not one of {sorted(STRATEGIES)}",
                    "invalid_config"))
    handling = configuration.get("errorHandling", "stop")
    if handling not in ERROR_HANDLING:
        add(Problem("unknown_error_handling", f"configuration.errorHandling {handling!r} is not one of "
                    f"{sorted(ERROR_HANDLING)}", "invalid_config"))
    timeout = configuration.get("timeout")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0):
        add(Problem("invalid_configuration", "configuration.timeout must be a positive number of seconds",
                    "invalid_config"))


def _check_schedule(schedule: Any, add) -> None:
    if schedule is None:
        return
    if not isinstance(schedule, dict):
        add(Problem("invalid_schedule", "schedule must be an object", "invalid_config"))
        return
    if (message := cron_problem(schedule.get("cron"))) is not None:
        add(Problem("invalid_cron", f"schedule: {message}", "invalid_config"))
    if (message := timezone_problem(schedule.get("timezone", "UTC"))) is not None:
        add(Problem("invalid_timezone", f"schedule: {message}", "invalid_config"))


# --------------------------------------------------------------------------- graph helpers


def _reachable(starts: list[str], adjacency: dict[str, list[str]]) -> set[str]:
    seen = set(starts)
    stack = list(starts)
    while stack:
        for nxt in adjacency.get(stack.pop(), []):
            if nxt not in seen:
                seen.add(nxt)
                stack.append(nxt)
    return seen


def _cycles(adjacency: dict[str, list[str]]) -> list[list[str]]:
    """The strongly connected components that hold a cycle (a self-loop included)."""
    return [c for c in _strongly_connected(adjacency) if len(c) > 1 or c[0] in adjacency.get(c[0], [])]


def _strongly_connected(adjacency: dict[str, list[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative (500 nodes deep would overflow recursion)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    counter = 0
    for root in adjacency:
        if root in index:
            continue
        work = [(root, 0)]
        while work:
            node, child_i = work.pop()
            if child_i == 0:
                index[node] = low[node] = counter
                counter += 1
                stack.append(node)
                on_stack.add(node)
            children = adjacency.get(node, [])
            recursed = False
            for i in range(child_i, len(children)):
                child = children[i]
                if child not in adjacency:
                    continue
                if child not in index:
                    work.append((node, i + 1))
                    work.append((child, 0))
                    recursed = True
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            if recursed:
                continue
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                components.append(list(reversed(component)))
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
    return components
