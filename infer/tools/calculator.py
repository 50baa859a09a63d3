"""The calculator tool: arithmetic a model may call, without ever running its text as code.

`calculator("4817 * 293")` returns `"1411381"`. Accepted: integer and float literals,
`+ - * / // % **`, parentheses, unary `+`/`-`. Everything else (names, calls, attributes,
strings, shifts, comparisons, ...) and every failure come back as a one-line string starting
with `"error: "`, which the model reads as the tool's answer; nothing here raises.

Why bounds instead of a timer: `signal.alarm` works only in the main thread, and a server calls
tools from worker threads. So the work is bounded up front: the input length and nesting depth
bound the tree, and before each power or product the size of its result is estimated from bit
lengths and refused if it would exceed `MAX_RESULT_BITS`. Every accepted operation is then on
numbers of a few thousand bits, which takes microseconds.
"""

from __future__ import annotations

import ast
import math
import operator

MAX_INPUT_CHARS = 1000
MAX_DEPTH = 50
MAX_RESULT_DIGITS = 1000
# A little above MAX_RESULT_DIGITS decimal digits: the intermediates may not be much bigger
# than a result we would print.
MAX_RESULT_BITS = int(MAX_RESULT_DIGITS * math.log2(10)) + 64
MAX_EXPONENT = 10_000


class CalculatorError(ValueError):
    """An expression the calculator refuses; its message is what the model reads."""


_BINARY = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
    ast.Div: operator.truediv, ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY = {ast.USub: operator.neg, ast.UAdd: operator.pos}
_SYMBOL = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.FloorDiv: "//",
           ast.Mod: "%", ast.Pow: "**"}


def calculator(expression: str) -> str:
    """The value of an arithmetic `expression` as Python prints it, or `"error: ..."`."""
    try:
        return _format(evaluate(expression))
    except CalculatorError as e:
        return f"error: {e}"
    except ZeroDivisionError:
        return "error: division by zero"
    except OverflowError:
        return "error: result too large for a float"
    except Exception as e:  # noqa: BLE001 -- the model must get an answer, never a traceback
        return f"error: {type(e).__name__}: {e}"


def evaluate(expression: str) -> int | float:
    """The value of `expression`; raises CalculatorError (or ArithmeticError) if refused."""
    if not isinstance(expression, str):
        raise CalculatorError("the expression must be a string")
    if len(expression) > MAX_INPUT_CHARS:
        raise CalculatorError(f"expression longer than {MAX_INPUT_CHARS} characters")
    # Parentheses nest without making tree nodes, and the parser recurses on them: refuse
    # deep nesting before parsing.
    if _paren_depth(expression) > MAX_DEPTH:
        raise CalculatorError(f"parentheses nested deeper than {MAX_DEPTH}")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        raise CalculatorError("not an arithmetic expression") from None
    # The whole tree is checked before anything is computed, so a refused part (a shift, a
    # call) is refused even when it sits next to an expensive one.
    _check_syntax(tree)
    _check_depth(tree.body, 0)
    return _eval(tree.body)


_ALLOWED_NODES = (ast.Expression, ast.Constant, ast.BinOp, ast.UnaryOp, *_BINARY, *_UNARY)


def _check_syntax(tree: ast.AST) -> None:
    for node in ast.walk(tree):
        if not isinstance(node, _ALLOWED_NODES):
            raise CalculatorError(f"{_describe(node)} is not allowed; use numbers, "
                                  "+ - * / // % ** and parentheses")
        # bool is an int subclass, but `True` is a name to a user, not a number.
        if isinstance(node, ast.Constant) and type(node.value) not in (int, float):
            raise CalculatorError(f"only numbers are allowed, not {type(node.value).__name__}")


def _check_depth(node: ast.AST, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise CalculatorError(f"expression nested deeper than {MAX_DEPTH}")
    for child in ast.iter_child_nodes(node):
        _check_depth(child, depth + 1)


def _paren_depth(text: str) -> int:
    depth = deepest = 0
    for ch in text:
        if ch in "([{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in ")]}":
            depth -= 1
    return deepest


def _describe(node: ast.AST) -> str:
    names = {ast.Name: "a name", ast.Call: "a function call", ast.Attribute: "attribute access",
             ast.Lambda: "a lambda", ast.Subscript: "indexing", ast.Compare: "a comparison",
             ast.BoolOp: "and/or", ast.LShift: "the shift <<", ast.RShift: "the shift >>",
             ast.BitAnd: "the operator &", ast.BitOr: "the operator |",
             ast.BitXor: "the operator ^", ast.Invert: "the operator ~",
             ast.MatMult: "the operator @", ast.Not: "not", ast.ListComp: "a comprehension",
             ast.SetComp: "a comprehension", ast.DictComp: "a comprehension",
             ast.GeneratorExp: "a comprehension", ast.JoinedStr: "an f-string"}
    return names.get(type(node), type(node).__name__)


def _eval(node: ast.AST) -> int | float:
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.UnaryOp):
        return _UNARY[type(node.op)](_eval(node.operand))
    a, b = _eval(node.left), _eval(node.right)
    _check_cost(type(node.op), a, b)
    value = _BINARY[type(node.op)](a, b)
    if isinstance(value, complex):  # a negative number to a fractional power
        raise CalculatorError("the result is not a real number")
    return value


def _bits(x: int | float) -> int:
    """The bits of an int's magnitude; 0 for a float (float work is constant time, and a
    float that overflows raises OverflowError or becomes inf)."""
    return abs(x).bit_length() if isinstance(x, int) else 0


def _check_cost(op: type, a: int | float, b: int | float) -> None:
    """Refuse an operation whose result would be too big to compute cheaply."""
    if op is ast.Pow:
        if isinstance(a, int) and isinstance(b, int) and abs(a) > 1:
            if abs(b) > MAX_EXPONENT:
                raise CalculatorError(f"exponent {b} is larger than {MAX_EXPONENT}")
            # |a| >= 2**(bits-1), so |a**b| >= 2**((bits-1)*b): refuse what is surely too big.
            if (_bits(a) - 1) * b > MAX_RESULT_BITS:
                raise CalculatorError(f"result of ** would exceed {MAX_RESULT_DIGITS} digits")
    elif op is ast.Mult:
        if _bits(a) + _bits(b) > MAX_RESULT_BITS + 1:
            raise CalculatorError(f"result of * would exceed {MAX_RESULT_DIGITS} digits")
    elif max(_bits(a), _bits(b)) > MAX_RESULT_BITS:
        raise CalculatorError(f"operand exceeds {MAX_RESULT_DIGITS} digits")


def _format(value: int | float) -> str:
    if isinstance(value, int):
        text = str(value) if value.bit_length() <= MAX_RESULT_BITS else ""
        if not text or len(text.lstrip("-")) > MAX_RESULT_DIGITS:
            raise CalculatorError(f"result exceeds {MAX_RESULT_DIGITS} digits")
        return text
    return repr(value)
