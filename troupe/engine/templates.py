"""Template references in node configuration, and the spec's conditions.

Syntax (no ``eval``): ``{{ path }}`` where ``path`` is dotted keys and list
indexes starting at one of these roots:

- ``input`` the task's input (``{{input.customer.name}}``, ``{{input.items.0}}``);
- ``vars`` the workflow's ``configuration.variables`` merged with the
  variables given to ``execute`` (``{{vars.region}}``);
- ``nodes.<nodeId>.output`` an earlier node's output (``{{nodes.fetch.output.status}}``);
- ``loop.item`` / ``loop.index`` inside a loop body;
- ``prev`` the output of the node that activated this one;
- ``task.id``, ``task.name``.

A string that is exactly one reference keeps the referenced value's type
(a list stays a list); references inside longer text are interpolated (JSON
for non-strings). A missing reference renders as null (whole-value) or the
empty string (inside text). Templates are applied recursively to dicts and lists.

Conditions are the spec's ``{field, operator, value, logic}`` with operators
``equals``, ``not_equals``, ``contains``, ``greater_than``, ``less_than``,
``exists``; ``field`` is a path as above. A condition on a missing field is
false (``exists`` reports exactly that); ``logic`` joins a condition to the
previous result (``and`` by default), evaluated left to right.
"""

from __future__ import annotations

import json
import re
from typing import Any

from troupe.engine.contract import OPERATORS

_REF = re.compile(r"\{\{\s*([A-Za-z_][\w\-]*(?:\.[\w\-]+)*)\s*\}\}")
_MISSING = object()


def lookup(path: str, context: dict[str, Any]) -> Any:
    """The value at ``path`` or ``_MISSING``."""
    current: Any = context
    for part in path.split("."):
        if isinstance(current, dict):
            if part not in current:
                return _MISSING
            current = current[part]
        elif isinstance(current, list) and part.lstrip("-").isdigit():
            index = int(part)
            if not -len(current) <= index < len(current):
                return _MISSING
            current = current[index]
        else:
            return _MISSING
    return current


def resolve(path: str, context: dict[str, Any]) -> Any:
    value = lookup(path, context)
    return None if value is _MISSING else value


def render(value: Any, context: dict[str, Any]) -> Any:
    if isinstance(value, str):
        whole = _REF.fullmatch(value.strip())
        if whole:
            return resolve(whole.group(1), context)

        def text(match: re.Match[str]) -> str:
            found = resolve(match.group(1), context)
            if found is None:
                return ""
            return found if isinstance(found, str) else json.dumps(found, default=str)

        return _REF.sub(text, value)
    if isinstance(value, dict):
        return {k: render(v, context) for k, v in value.items()}
    if isinstance(value, list):
        return [render(v, context) for v in value]
    return value


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def check(condition: dict[str, Any], context: dict[str, Any]) -> bool:
    operator = condition.get("operator")
    if operator not in OPERATORS:
        raise ValueError(f"unknown condition operator {operator!r}")
    actual = lookup(str(condition.get("field", "")), context)
    if operator == "exists":
        return actual is not _MISSING and actual is not None
    if actual is _MISSING:
        return False
    expected = render(condition.get("value"), context)
    if operator == "equals":
        return actual == expected or (_number(actual) is not None and _number(actual) == _number(expected))
    if operator == "not_equals":
        return not (actual == expected or (_number(actual) is not None and _number(actual) == _number(expected)))
    if operator == "contains":
        if isinstance(actual, str):
            return str(expected) in actual
        if isinstance(actual, list | dict):
            return expected in actual
        return False
    left, right = _number(actual), _number(expected)
    if left is None or right is None:
        return False
    return left > right if operator == "greater_than" else left < right


def evaluate(conditions: list[dict[str, Any]], context: dict[str, Any]) -> bool:
    """and/or over the list, left to right; an empty list is true."""
    result: bool | None = None
    for condition in conditions:
        value = check(condition, context)
        if result is None:
            result = value
        elif str(condition.get("logic", "and")).lower() == "or":
            result = result or value
        else:
            result = result and value
    return True if result is None else result


_EDGE_EXPR = re.compile(r"^\s*([\w.\-]+)\s*(==|!=|>=|<=|>|<|contains)\s*(.+?)\s*$")


def edge_condition(expr: str | None, context: dict[str, Any], source_output: Any) -> bool:
    """A conditional edge's ``condition``: ``true``/``false`` (match the source
    condition node's result) or ``<path> <op> <JSON literal>``."""
    if expr is None or not str(expr).strip():
        return True
    text = str(expr).strip()
    if text.lower() in ("true", "yes", "false", "no"):
        result = source_output.get("result") if isinstance(source_output, dict) else source_output
        return bool(result) == (text.lower() in ("true", "yes"))
    match = _EDGE_EXPR.match(text)
    if not match:
        # A bare dot path into the source's output: its truthiness gates the edge.
        if re.fullmatch(r"[\w.\-]+", text):
            found = lookup(text, source_output if isinstance(source_output, dict) else {})
            if found is _MISSING:
                found = lookup(text, context)
            return found is not _MISSING and bool(found)
        raise ValueError(f"cannot parse edge condition {expr!r}")
    path, op, literal = match.groups()
    try:
        expected = json.loads(literal)
    except ValueError:
        expected = literal.strip("'\"")
    actual = lookup(path, context)
    if actual is _MISSING:
        return False
    left, right = _number(actual), _number(expected)
    if op == "==":
        return actual == expected or (left is not None and left == right)
    if op == "!=":
        return not (actual == expected or (left is not None and left == right))
    if op == "contains":
        return check({"field": path, "operator": "contains", "value": expected}, context)
    if left is None or right is None:
        return False
    return {">": left > right, "<": left < right, ">=": left >= right, "<=": left <= right}[op]
