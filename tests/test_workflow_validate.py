"""The one graph validator: a valid graph passes; each broken graph reports its rule;
and over HTTP ``/validate``, activation and execute give the same verdict."""

from __future__ import annotations

import copy

import pytest

from tests.utils import engine
from tests.utils.fixtures import assert_error, assert_ok
from troupe.engine.validate import Limits, errors_of, validate_graph

AGENT = "11111111-2222-3333-4444-555555555555"
TOOL = "66666666-7777-8888-9999-000000000000"


def node(nid, type_, **data):
    return {"id": nid, "type": type_, "position": {"x": 0, "y": 0}, "data": {"label": nid, **data}}


def edge(source, target, type_="default", condition=None, eid=None):
    e = {"id": eid or f"{source}-{target}", "source": source, "target": target, "type": type_}
    if condition is not None:
        e["condition"] = condition
    return e


def base():
    nodes = [
        node("in", "input"),
        node("ask", "agent", agentId=AGENT, configuration={"prompt": "{{input.q}}"}),
        node("check", "condition", conditions=[{"field": "nodes.ask.output", "operator": "contains", "value": "x"}]),
        node("loop", "loop", configuration={"maxIterations": 3, "items": "{{nodes.ask.output}}"}),
        node("lookup", "tool", toolId=TOOL, configuration={"input": {"q": "{{loop.item}}"}}),
        node("wait", "delay", configuration={"seconds": 5}),
        node("hook", "webhook", configuration={"url": "https://hooks.example.com/x", "method": "POST"}),
        node("mail", "email", configuration={"to": ["a@example.com"], "subject": "s", "body": "b"}),
        node("out", "output"),
    ]
    edges = [edge("in", "ask"), edge("ask", "check"), edge("check", "loop", "conditional", "true"),
             edge("check", "mail", "conditional", "false"), edge("loop", "lookup"), edge("lookup", "loop"),
             edge("loop", "wait"), edge("wait", "hook"), edge("hook", "out"), edge("mail", "out")]
    return nodes, edges


def find(nodes, nid):
    return next(n for n in nodes if n["id"] == nid)


def test_valid_graph_has_no_problems():
    nodes, edges = base()
    problems = validate_graph(nodes, edges, {"strategy": "parallel", "errorHandling": "retry"},
                              {"enabled": True, "cron": "*/5 * * * *", "timezone": "Europe/Paris"})
    assert problems == []


def test_inline_agent_configuration_is_accepted():
    nodes, edges = base()
    find(nodes, "ask")["data"] = {"label": "ask", "configuration": {"provider": "simulated", "model": "simulated-1"}}
    assert validate_graph(nodes, edges) == []


def _mutations():
    def unknown_type(n, e):
        find(n, "wait")["type"] = "teleport"

    def duplicate_node(n, e):
        n.append(node("wait", "delay", configuration={"seconds": 1}))

    def duplicate_edge(n, e):
        e.append(dict(e[0]))

    def edge_to_missing(n, e):
        e.append(edge("hook", "ghost", eid="to-ghost"))

    def edge_from_missing(n, e):
        e.append(edge("ghost", "out", eid="from-ghost"))

    def no_input(n, e):
        find(n, "in")["type"] = "delay"
        find(n, "in")["data"]["configuration"] = {"seconds": 1}

    def no_output(n, e):
        find(n, "out")["type"] = "delay"
        find(n, "out")["data"]["configuration"] = {"seconds": 1}

    def unreachable(n, e):
        n.append(node("island", "delay", configuration={"seconds": 1}))
        e.append(edge("island", "out"))

    def cycle_without_loop(n, e):
        e.append(edge("hook", "wait"))

    def loop_without_bound(n, e):
        find(n, "loop")["data"]["configuration"] = {"items": "{{input.list}}"}

    def loop_bound_too_big(n, e):
        find(n, "loop")["data"]["configuration"]["maxIterations"] = 10_001

    def loop_without_items_or_while(n, e):
        del find(n, "loop")["data"]["configuration"]["items"]

    def loop_without_body(n, e):
        e.remove(next(x for x in e if x["id"] == "lookup-loop"))
        e.append(edge("lookup", "wait"))

    def loop_body_unknown(n, e):
        find(n, "loop")["data"]["configuration"]["body"] = ["lookup", "ghost"]

    def loop_body_not_a_list(n, e):
        find(n, "loop")["data"]["configuration"]["body"] = "lookup"

    def loop_body_repeats_a_node(n, e):
        find(n, "loop")["data"]["configuration"]["body"] = ["lookup", "lookup"]

    def nested_loop(n, e):
        n.append(node("inner", "loop", configuration={"maxIterations": 2, "items": "{{loop.item}}"}))
        e.append(edge("lookup", "inner", eid="lookup-inner"))
        e.append(edge("inner", "loop", eid="inner-loop"))

    def cycle_outside_body(n, e):
        find(n, "loop")["data"]["configuration"]["body"] = ["wait"]

    def unknown_operator(n, e):
        find(n, "check")["data"]["conditions"][0]["operator"] = "approximately"

    def unknown_logic(n, e):
        find(n, "check")["data"]["conditions"][0]["logic"] = "xor"

    def no_conditions(n, e):
        find(n, "check")["data"]["conditions"] = []

    def conditional_edge_without_condition(n, e):
        del next(x for x in e if x["id"] == "check-loop")["condition"]

    def condition_edge_bad_branch(n, e):
        next(x for x in e if x["id"] == "check-loop")["condition"] = "maybe"

    def unknown_edge_type(n, e):
        e[0]["type"] = "teleport"

    def agent_without_reference(n, e):
        find(n, "ask")["data"] = {"label": "ask", "configuration": {"provider": "simulated"}}

    def agent_bad_id(n, e):
        find(n, "ask")["data"]["agentId"] = "agent-7"

    def tool_without_reference(n, e):
        del find(n, "lookup")["data"]["toolId"]

    def delay_invalid(n, e):
        find(n, "wait")["data"]["configuration"] = {"seconds": -3}

    def delay_missing(n, e):
        find(n, "wait")["data"]["configuration"] = {}

    def webhook_without_url(n, e):
        find(n, "hook")["data"]["configuration"] = {"url": "ftp://x"}

    def email_without_to(n, e):
        find(n, "mail")["data"]["configuration"] = {"subject": "hi"}

    def email_bad_to(n, e):
        find(n, "mail")["data"]["configuration"]["to"] = "not-an-address"

    return [
        ("unknown_node_type", unknown_type, "wait", None, None, None),
        ("duplicate_node_id", duplicate_node, "wait", None, None, None),
        ("duplicate_edge_id", duplicate_edge, None, "in-ask", None, None),
        ("edge_target_missing", edge_to_missing, None, "to-ghost", None, None),
        ("edge_source_missing", edge_from_missing, None, "from-ghost", None, None),
        ("no_input_node", no_input, None, None, None, None),
        ("no_output_node", no_output, None, None, None, None),
        ("unreachable_node", unreachable, "island", None, None, None),
        ("cycle_without_loop", cycle_without_loop, "wait", None, None, None),
        ("loop_without_bound", loop_without_bound, "loop", None, None, None),
        ("loop_without_bound", loop_bound_too_big, "loop", None, None, None),
        ("loop_without_items_or_while", loop_without_items_or_while, "loop", None, None, None),
        ("loop_without_body", loop_without_body, "loop", None, None, None),
        ("invalid_loop_body", loop_body_unknown, "loop", None, None, None),
        ("invalid_config", loop_body_not_a_list, "loop", None, None, None),
        ("invalid_config", loop_body_repeats_a_node, "loop", None, None, None),
        ("nested_loop", nested_loop, "loop", None, None, None),
        ("cycle_outside_loop_body", cycle_outside_body, "loop", None, None, None),
        ("unknown_operator", unknown_operator, "check", None, None, None),
        ("unknown_logic", unknown_logic, "check", None, None, None),
        ("condition_without_conditions", no_conditions, "check", None, None, None),
        ("conditional_edge_without_condition", conditional_edge_without_condition, None, "check-loop", None, None),
        ("invalid_edge_condition", condition_edge_bad_branch, None, "check-loop", None, None),
        ("unknown_edge_type", unknown_edge_type, None, "in-ask", None, None),
        ("agent_without_reference", agent_without_reference, "ask", None, None, None),
        ("invalid_reference", agent_bad_id, "ask", None, None, None),
        ("tool_without_reference", tool_without_reference, "lookup", None, None, None),
        ("invalid_delay", delay_invalid, "wait", None, None, None),
        ("invalid_delay", delay_missing, "wait", None, None, None),
        ("webhook_without_url", webhook_without_url, "hook", None, None, None),
        ("email_without_recipient", email_without_to, "mail", None, None, None),
        ("email_without_recipient", email_bad_to, "mail", None, None, None),
        ("invalid_cron", None, None, None, None, {"enabled": True, "cron": "61 * * * *", "timezone": "UTC"}),
        ("invalid_timezone", None, None, None, None, {"enabled": True, "cron": "0 * * * *", "timezone": "Mars/Base"}),
        ("unknown_strategy", None, None, None, {"strategy": "chaotic"}, None),
        ("unknown_error_handling", None, None, None, {"errorHandling": "ignore"}, None),
    ]


@pytest.mark.parametrize(("code", "mutate", "node_id", "edge_id", "configuration", "schedule"), _mutations(),
                         ids=[f"{m[0]}:{m[1].__name__ if m[1] else 'config'}" for m in _mutations()])
def test_each_rule_is_reported(code, mutate, node_id, edge_id, configuration, schedule):
    nodes, edges = base()
    if mutate:
        mutate(nodes, edges)
    problems = errors_of(validate_graph(nodes, edges, configuration, schedule))
    matching = [p for p in problems if p.code == code]
    assert matching, [p.as_dict() for p in problems]
    if node_id:
        assert any(p.node_id == node_id for p in matching), [p.as_dict() for p in matching]
    if edge_id:
        assert any(p.edge_id == edge_id for p in matching), [p.as_dict() for p in matching]


def test_size_limits():
    nodes, edges = base()
    many = [node(f"n{i}", "delay", configuration={"seconds": 1}) for i in range(6)]
    codes = {p.code for p in validate_graph(nodes + many, edges * 1, None, None,
                                            Limits(max_nodes=10, max_edges=5, max_document_bytes=500))}
    assert {"too_many_nodes", "too_many_edges", "document_too_large"} <= codes


def test_every_problem_is_reported_at_once():
    nodes, edges = base()
    find(nodes, "loop")["data"]["configuration"] = {}
    find(nodes, "check")["data"]["conditions"][0]["operator"] = "like"
    e = copy.deepcopy(edges) + [edge("hook", "nowhere", eid="dangling")]
    codes = {p.code for p in validate_graph(nodes, e, {"strategy": "x"}, {"cron": "bad", "timezone": "UTC"})}
    assert {"loop_without_bound", "unknown_operator", "edge_target_missing", "unknown_strategy", "invalid_cron"} <= codes


def test_cycle_through_loop_is_fine_but_a_bypass_is_not():
    nodes, edges = base()
    assert not [p for p in validate_graph(nodes, edges) if p.code == "cycle_without_loop"]
    # lookup -> wait -> hook -> lookup avoids the loop node even though loop is in the same component.
    edges += [edge("lookup", "wait"), edge("hook", "lookup")]
    problems = [p for p in validate_graph(nodes, edges) if p.code == "cycle_without_loop"]
    assert len(problems) == 1 and "lookup" in problems[0].message


def test_warnings_do_not_fail_the_graph():
    nodes, edges = base()
    nodes.append(node("spare", "delay", configuration={"seconds": 1}))
    edges.append(edge("in", "spare"))
    problems = validate_graph(nodes, edges)
    assert [p.code for p in problems] == ["dead_end"] and problems[0].severity == "warning"
    assert errors_of(problems) == []


def test_garbage_input_does_not_crash():
    problems = validate_graph("nodes", {"a": 1}, "config", ["schedule"])
    codes = {p.code for p in problems}
    assert {"no_input_node", "no_output_node", "invalid_configuration", "invalid_schedule"} <= codes
    problems = validate_graph([None, {"id": 3}, {"id": "x", "type": "agent", "data": "nope"}], [7], None, None)
    assert {"invalid_node", "invalid_edge"} <= {p.code for p in problems}


def test_a_loop_body_given_as_a_list_is_fine():
    nodes, edges = base()
    find(nodes, "loop")["data"]["configuration"]["body"] = ["lookup"]
    assert validate_graph(nodes, edges) == []


def test_a_cycle_inside_a_loop_body_is_refused():
    nodes, edges = base()
    nodes.append(node("again", "delay", configuration={"seconds": 1}))
    edges += [edge("lookup", "again"), edge("again", "lookup")]
    assert "cycle_without_loop" in {p.code for p in errors_of(validate_graph(nodes, edges))}


# --------------------------------------------------------------------------- /validate, activation and execute agree


def _loop_graph(loop_config, *, extra_nodes=(), extra_edges=()):
    """in -> loop <-> x, loop -> out; ``extra`` nodes and edges bend it into the case under test."""
    nodes = [engine.node("in", "input"), engine.node("loop", "loop", **loop_config),
             engine.node("x", "delay", seconds=0.01), engine.node("out", "output"), *extra_nodes]
    return nodes, [engine.edge("in", "loop"), engine.edge("loop", "x"), engine.edge("x", "loop"),
                   engine.edge("loop", "out"), *extra_edges]


# Graphs the two validators used to disagree on: ``/validate`` and activation (validate_graph) accepted
# them, execute (graph.problems, run there too) refused them, and the driver could run none of them.
# The first case is the control: a loop both accepted, and still do.
DISAGREED = {
    "a bounded loop over items": (True, _loop_graph({"maxIterations": 2, "items": "{{input.list}}"})),
    "loop without items or while": (False, _loop_graph({"maxIterations": 2})),
    "loop on no cycle": (False, ([engine.node("in", "input"),
                                  engine.node("loop", "loop", maxIterations=2, items="{{input.list}}"),
                                  engine.node("out", "output")], engine.chain("in", "loop", "out"))),
    "loop body naming an unknown node": (False, _loop_graph({"maxIterations": 2, "items": "{{input.list}}",
                                                             "body": ["x", "ghost"]})),
    "nested loops": (False, _loop_graph(
        {"maxIterations": 2, "items": "{{input.list}}"},
        extra_nodes=[engine.node("inner", "loop", maxIterations=2, items="{{loop.item}}")],
        extra_edges=[engine.edge("x", "inner"), engine.edge("inner", "x")])),
    "cycle outside the loop body": (False, _loop_graph(
        {"maxIterations": 2, "items": "{{input.list}}", "body": ["side"]},
        extra_nodes=[engine.node("side", "delay", seconds=0.01)],
        extra_edges=[engine.edge("loop", "side"), engine.edge("side", "out")])),
}


@pytest.mark.parametrize("case", list(DISAGREED))
async def test_validate_activation_and_execute_agree(client, user, case):
    runnable, (nodes, edges) = DISAGREED[case]
    company = await engine.make_company(user.id)
    # Stored straight in the database, as a workflow activated before the rules met would be.
    active = await engine.make_workflow(company, user.id, nodes, edges)
    draft = await engine.make_workflow(company, user.id, nodes, edges, status="draft")

    report = assert_ok(await client.post(f"/api/workflows/{active}/validate", headers=user.headers))
    assert report["isValid"] is runnable, report
    activate = await client.put(f"/api/workflows/{draft}", json={"status": "active"}, headers=user.headers)
    execute = await client.post(f"/api/workflows/{active}/execute", json={"input": {"list": [1]}},
                                headers=user.headers)
    if runnable:
        assert assert_ok(activate)["status"] == "active"
        assert_ok(execute, 202)
    else:
        codes = {issue["code"] for issue in report["errors"]}
        assert_error(activate, 422, "BIZ_001")
        refused = assert_error(execute, 422, "BIZ_001")
        assert codes <= {p["code"] for p in refused["details"]["problems"]}, (codes, refused)


def test_openapi_has_one_node_edge_and_condition_schema():
    from troupe.platform.app import create_app

    names = set(create_app().openapi()["components"]["schemas"])
    assert {"WorkflowNode", "NodeData", "WorkflowEdge", "WorkflowCondition", "Position"} <= names
    graph_models = ("WorkflowNode", "NodeData", "WorkflowEdge", "WorkflowCondition", "Position", "NodeStyle",
                    "EdgeStyle")
    twins = [n for n in names if n.startswith("troupe__") and n.endswith(graph_models)]
    assert not twins, twins  # a second definition would appear module-qualified
