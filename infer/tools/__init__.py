"""Tools a model may call: name -> a function of the call's JSON arguments, returning text.

A call is OpenAI-shaped: `{"name": "calculator", "arguments": {"expression": "2+2"}}`, where
`arguments` is an object or a JSON string of one. `call_tool(name, arguments)` always returns a
string: the tool's answer, or `"error: ..."` for an unknown tool or bad arguments, because the
model reads the result and must be able to recover from its own mistakes.
"""

from __future__ import annotations

import json
from typing import Callable

from infer.tools.calculator import calculator


def _calculator_tool(arguments: dict) -> str:
    expression = arguments.get("expression")
    if not isinstance(expression, str):
        return 'error: the calculator takes {"expression": "<arithmetic>"}'
    return calculator(expression)


TOOLS: dict[str, Callable[[dict], str]] = {"calculator": _calculator_tool}

# What a chat template shows the model about each tool (OpenAI's function schema).
SCHEMAS: dict[str, dict] = {
    "calculator": {
        "type": "function",
        "function": {
            "name": "calculator",
            "description": "Evaluate arithmetic: numbers, + - * / // % ** and parentheses.",
            "parameters": {
                "type": "object",
                "properties": {"expression": {"type": "string",
                                              "description": "for example 4817 * 293"}},
                "required": ["expression"],
            },
        },
    },
}


def check_names(names: list[str]) -> None:
    """Raise ValueError naming the known tools if any of `names` is not one."""
    unknown = [n for n in names if n not in TOOLS]
    if unknown:
        raise ValueError(f"unknown tool {', '.join(unknown)}; known tools: {', '.join(TOOLS)}")


def call_tool(name: object, arguments: object, allowed: list[str] | None = None) -> str:
    """Run tool `name` on `arguments` (a dict or its JSON text); the result or an error text."""
    names = list(TOOLS) if allowed is None else allowed
    if not isinstance(name, str) or name not in names or name not in TOOLS:
        return f"error: unknown tool {name!r}; available: {', '.join(names) or 'none'}"
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except json.JSONDecodeError as e:
            return f"error: the arguments are not JSON ({e.msg})"
    if not isinstance(arguments, dict):
        return "error: the arguments must be a JSON object"
    return TOOLS[name](arguments)
