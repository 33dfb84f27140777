"""The run's graph: which nodes are loop bodies, edge routing, and the checks a
workflow must pass before it can run (the engine's own, added to the
workflows engineer's ``validate_graph`` when present)."""

from __future__ import annotations

from typing import Any

from troupe.engine import templates

NODE_TYPES = frozenset({"input", "agent", "tool", "output", "condition", "loop", "delay", "webhook", "email"})
EDGE_TYPES = frozenset({"default", "success", "error", "conditional"})
STRATEGIES = frozenset({"sequential", "parallel", "conditional", "hybrid"})
ERROR_HANDLING = frozenset({"stop", "continue", "retry", "fallback"})
MAX_LOOP_ITERATIONS = 10_000


def config_of(node: dict[str, Any]) -> dict[str, Any]:
    return dict((node.get("data") or {}).get("configuration") or {})


def loop_body(loop: dict[str, Any], edges: list[dict[str, Any]]) -> list[str]:
    """``configuration.body`` if given, else the nodes on cycles back to the loop
    node (reachable from it and reaching it), as ``troupe.engine.validate`` defines."""
    explicit = config_of(loop).get("body")
    if explicit:
        return [str(n) for n in explicit]
    lid = loop["id"]
    forward: dict[str, set[str]] = {}
    backward: dict[str, set[str]] = {}
    for e in edges:
        forward.setdefault(e.get("source"), set()).add(e.get("target"))
        backward.setdefault(e.get("target"), set()).add(e.get("source"))

    def reach(start: str, adjacency: dict[str, set[str]]) -> set[str]:
        seen: set[str] = set()
        stack = list(adjacency.get(start, ()))
        while stack:
            n = stack.pop()
            if n not in seen and n != start:
                seen.add(n)
                stack.extend(adjacency.get(n, ()))
        return seen

    inside = reach(lid, forward) & reach(lid, backward)
    return [e for e in dict.fromkeys(x.get("target") for x in edges) if e in inside]


def body_nodes(nodes: list[dict[str, Any]], edges: list[dict[str, Any]] | None = None) -> dict[str, str]:
    """node id -> id of the loop whose body it is."""
    owner: dict[str, str] = {}
    for node in nodes:
        if node.get("type") == "loop":
            for nid in loop_body(node, edges or []):
                owner[str(nid)] = node["id"]
    return owner


def body_order(loop: dict[str, Any], edges: list[dict[str, Any]]) -> list[str]:
    """The loop body in topological order of the edges among its nodes."""
    body = loop_body(loop, edges)
    inside = set(body)
    incoming = {n: {e["source"] for e in edges if e.get("target") == n and e.get("source") in inside
                    and e.get("source") != loop["id"]} for n in body}
    order: list[str] = []
    while incoming:
        ready = [n for n in body if n in incoming and not (incoming[n] - set(order))]
        if not ready:
            raise ValueError(f"loop {loop['id']} body has a cycle")
        order += ready
        for n in ready:
            incoming.pop(n)
    return order


def problems(nodes: list[dict[str, Any]], edges: list[dict[str, Any]],
             configuration: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Everything that would stop this graph from running, as ``{path, message}``."""
    found: list[dict[str, Any]] = []
    configuration = configuration or {}
    ids = [n.get("id") for n in nodes]
    if not nodes:
        found.append({"path": "nodes", "message": "workflow has no nodes"})
    if len(set(ids)) != len(ids):
        found.append({"path": "nodes", "message": "node ids must be unique"})
    known = set(ids)
    owners = body_nodes(nodes, edges)
    for i, node in enumerate(nodes):
        kind, cfg, data = node.get("type"), config_of(node), node.get("data") or {}
        path = f"nodes[{i}]"
        if kind not in NODE_TYPES:
            found.append({"path": f"{path}.type", "message": f"unknown node type {kind!r}"})
        inline = isinstance(cfg.get("provider"), str) and cfg["provider"].strip() and \
            isinstance(cfg.get("model"), str) and cfg["model"].strip()
        if kind == "agent" and not data.get("agentId") and not inline:
            found.append({"path": f"{path}.data.agentId", "message": "agent node needs agentId or an inline "
                                                                     "configuration.provider and configuration.model"})
        if kind == "tool" and not data.get("toolId"):
            found.append({"path": f"{path}.data.toolId", "message": "tool node needs toolId"})
        if kind == "condition":
            conds = data.get("conditions") or cfg.get("conditions")
            if not conds:
                found.append({"path": f"{path}.data.conditions", "message": "condition node needs conditions"})
            for j, cond in enumerate(conds or []):
                if not isinstance(cond, dict) or cond.get("operator") not in templates.OPERATORS:
                    found.append({"path": f"{path}.data.conditions[{j}].operator",
                                  "message": f"operator must be one of {sorted(templates.OPERATORS)}"})
                elif not cond.get("field"):
                    found.append({"path": f"{path}.data.conditions[{j}].field", "message": "field is required"})
        if kind == "loop":
            bound = cfg.get("maxIterations")
            if not isinstance(bound, int) or isinstance(bound, bool) or not 1 <= bound <= MAX_LOOP_ITERATIONS:
                found.append({"path": f"{path}.data.configuration.maxIterations",
                              "message": f"a loop needs a hard bound maxIterations in 1..{MAX_LOOP_ITERATIONS}"})
            if "items" not in cfg and not cfg.get("while"):
                found.append({"path": f"{path}.data.configuration",
                              "message": "a loop needs items (a list) or while (conditions)"})
            body = loop_body(node, edges)
            if not body:
                found.append({"path": f"{path}.data.configuration.body",
                              "message": "a loop needs a body: nodes on a cycle back to the loop node"})
            for nid in body:
                if nid not in known:
                    found.append({"path": f"{path}.data.configuration.body", "message": f"unknown node {nid!r}"})
                elif nid == node.get("id") or any(n.get("id") == nid and n.get("type") == "loop" for n in nodes):
                    found.append({"path": f"{path}.data.configuration.body",
                                  "message": "loops cannot be nested or contain themselves"})
            try:
                if body and all(nid in known for nid in body):
                    body_order(node, edges)
            except ValueError as exc:
                found.append({"path": f"{path}.data.configuration.body", "message": str(exc)})
    for i, edge in enumerate(edges):
        if edge.get("source") not in known or edge.get("target") not in known:
            found.append({"path": f"edges[{i}]", "message": "edge refers to an unknown node"})
        if edge.get("type", "default") not in EDGE_TYPES:
            found.append({"path": f"edges[{i}].type", "message": f"edge type must be one of {sorted(EDGE_TYPES)}"})
    strategy = configuration.get("strategy", "hybrid")
    if strategy not in STRATEGIES:
        found.append({"path": "configuration.strategy", "message": f"strategy must be one of {sorted(STRATEGIES)}"})
    if configuration.get("errorHandling", "stop") not in ERROR_HANDLING:
        found.append({"path": "configuration.errorHandling",
                      "message": f"errorHandling must be one of {sorted(ERROR_HANDLING)}"})
    # The main graph (outside loop bodies) must be acyclic.
    main = [n for n in ids if n not in owners]
    incoming = {n: {e.get("source") for e in edges if e.get("target") == n and e.get("source") in main}
                for n in main}
    done: set[Any] = set()
    while True:
        ready = [n for n in main if n not in done and not (incoming.get(n, set()) - done)]
        if not ready:
            break
        done.update(ready)
    if len(done) < len(main):
        found.append({"path": "edges", "message": "the graph has a cycle (use a loop node to repeat steps)"})
    return found
