"""The run's graph as the driver walks it: node configuration and loop bodies.

Whether a graph can run at all is ``troupe.engine.validate.validate_graph``'s
question; a graph it reports no error for has non-empty, acyclic, un-nested
loop bodies, so ``body_order`` does not raise on it."""

from __future__ import annotations

from typing import Any


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
