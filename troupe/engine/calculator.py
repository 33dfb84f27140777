"""Safe arithmetic for the ``calculator`` tool: an ``ast`` walk over numbers and
operators only (no names, calls or attributes; no ``eval``).

Every value is bounded, so no expression can hold a process for long: CPython's
big-integer operations keep the GIL for their whole length, so a thread does not
protect the event loop from one huge ``**``; only bounding the operands does.

- the expression: ``MAX_EXPRESSION`` characters, ``MAX_NODES`` syntax nodes;
- integer literals: ``MAX_LITERAL_DIGITS`` digits;
- every intermediate integer result: ``MAX_RESULT_DIGITS`` digits, estimated
  *before* a ``**`` is computed (``exponent * log10(|base|)``);
- ``factorial(n)``: ``0 <= n <= MAX_FACTORIAL``; ``round(x, n)``: ``|n| <= 100``;
- float results must be finite; complex results are refused;
- the whole evaluation: ``timeout_s`` (checked at every node).

Every refusal raises ``CalculatorError`` (a ``ValueError``) with a message for the caller.
"""

from __future__ import annotations

import ast
import math
import operator
import time
from collections.abc import Callable
from typing import Any

MAX_EXPRESSION = 500
MAX_NODES = 200
MAX_LITERAL_DIGITS = 100
MAX_RESULT_DIGITS = 1000
MAX_FACTORIAL = 400  # 400! has 869 digits
MAX_ROUND_DIGITS = 100
DEFAULT_TIMEOUT_S = 1.0

_BIN: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow}
_UNARY: dict[type[ast.unaryop], Callable[[Any], Any]] = {ast.UAdd: operator.pos, ast.USub: operator.neg}


class CalculatorError(ValueError):
    """An expression the calculator refuses (syntax, unsupported element, or a bound)."""


Number = int | float


def _factorial(n: Number) -> int:
    if isinstance(n, float):
        if not n.is_integer():
            raise CalculatorError("factorial needs a whole number")
        n = int(n)
    if n < 0 or n > MAX_FACTORIAL:
        raise CalculatorError(f"factorial needs 0 <= n <= {MAX_FACTORIAL}")
    return math.factorial(n)


def _round(x: Number, ndigits: Number | None = None) -> Number:
    if ndigits is None:
        return round(x)
    if not isinstance(ndigits, int) or abs(ndigits) > MAX_ROUND_DIGITS:
        raise CalculatorError(f"round's digits must be a whole number within ±{MAX_ROUND_DIGITS}")
    return round(x, ndigits)


_FUNCS: dict[str, Callable[..., Any]] = {"sqrt": math.sqrt, "abs": abs, "round": _round, "min": min, "max": max,
                                         "factorial": _factorial}


def calculate(expression: Any, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> Number:
    if not isinstance(expression, str) or not expression.strip():
        raise CalculatorError("expression must be a non-empty string")
    if len(expression) > MAX_EXPRESSION:
        raise CalculatorError(f"expression too long (at most {MAX_EXPRESSION} characters)")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        raise CalculatorError(f"not an arithmetic expression: {getattr(exc, 'msg', exc)}") from None
    if sum(1 for _ in ast.walk(tree)) > MAX_NODES:
        raise CalculatorError(f"expression too complex (at most {MAX_NODES} elements)")
    deadline = time.monotonic() + timeout_s
    try:
        return _walk(tree.body, deadline)
    except CalculatorError:
        raise
    except ZeroDivisionError:
        raise CalculatorError("division by zero") from None
    except OverflowError:
        raise CalculatorError(f"result too large (at most {MAX_RESULT_DIGITS} digits)") from None
    except (ValueError, TypeError, RecursionError) as exc:
        raise CalculatorError(str(exc)) from None


def _digits(value: int) -> float:
    """Decimal digits of a non-zero integer, without converting it to a string."""
    return value.bit_length() * math.log10(2)


def _checked(value: Any) -> Number:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise CalculatorError("result is not a real number")
    if isinstance(value, int):
        if value and _digits(value) > MAX_RESULT_DIGITS:
            raise CalculatorError(f"result too large (at most {MAX_RESULT_DIGITS} digits)")
    elif not math.isfinite(value):
        raise CalculatorError("result is not finite")
    return value


def _power(base: Number, exponent: Number) -> Number:
    if isinstance(base, int) and isinstance(exponent, int) and exponent > 0 and abs(base) > 1:
        # Estimated before computing: (9**999)**999 already has ~952k digits.
        if exponent * math.log10(abs(base)) > MAX_RESULT_DIGITS:
            raise CalculatorError(f"result too large (at most {MAX_RESULT_DIGITS} digits)")
    return base ** exponent


def _walk(node: ast.AST, deadline: float) -> Number:
    if time.monotonic() > deadline:
        raise CalculatorError("expression took too long to evaluate")
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float) and not isinstance(node.value, bool):
        if isinstance(node.value, int) and node.value and _digits(node.value) > MAX_LITERAL_DIGITS:
            raise CalculatorError(f"number too large (at most {MAX_LITERAL_DIGITS} digits)")
        return _checked(node.value)
    if isinstance(node, ast.BinOp) and type(node.op) in _BIN:
        left, right = _walk(node.left, deadline), _walk(node.right, deadline)
        if isinstance(node.op, ast.Pow):
            return _checked(_power(left, right))
        return _checked(_BIN[type(node.op)](left, right))
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _checked(_UNARY[type(node.op)](_walk(node.operand, deadline)))
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FUNCS
            and not node.keywords):
        return _checked(_FUNCS[node.func.id](*[_walk(a, deadline) for a in node.args]))
    raise CalculatorError(f"unsupported expression element: {type(node).__name__}")
