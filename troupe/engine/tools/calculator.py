"""``calculator`` tools: ``input.expression`` evaluated by troupe.engine.calculator
(numbers and operators only). Output ``{"result": <number>}``."""

from __future__ import annotations

from troupe.engine.calculator import calculate
from troupe.engine.contract import NodeResult
from troupe.engine.tools.registry import ToolCall, tool_runtime


@tool_runtime("calculator")
def run_calculator(call: ToolCall) -> NodeResult:
    expression = call.input.get("expression") if isinstance(call.input, dict) else call.input
    try:
        return NodeResult.success({"result": calculate(expression)})
    except (ValueError, SyntaxError, ZeroDivisionError, OverflowError, TypeError, MemoryError) as exc:
        return NodeResult.fail("BIZ_003", f"calculator: {exc}", retryable=False)
