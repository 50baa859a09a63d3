"""The arithmetic task: "What is 4817 * 293?", answered through a calculator or in the head.

    task = ArithmeticTask(digits=(4, 3), ops="*", tool=True)
    item = task.items(100, seed=0)[0]
    task.grade(item, "4817 * 293 = 1411381.")     # 1.0

The problem generator lives here, below train, so that SFT data (train.datasets.arithmetic),
evaluation and RL rewards all draw the same problems and use one grader. With the tool, the
worked answer is an OpenAI-shaped call of `calculator` with the expression, then a tool message
holding the result, then an assistant turn stating it:

    user       What is 4817 * 293?
    assistant  tool_calls=[{"id": "call_0", "type": "function", "function": {"name": "calculator",
                            "arguments": "{\"expression\": \"4817 * 293\"}"}}]
    tool       1411381
    assistant  4817 * 293 = 1411381.

Without it, the assistant states the same final line directly, so the two differ only in the
tool round trip. Results are Python's exact int arithmetic. `split` gives training and held-out
problems that share no (a, op, b); the task evaluates on the held-out stream.
"""

from __future__ import annotations

import dataclasses
import json
import operator
import random

from evals.tasks import Item, TaskError
from evals.tasks.grading import final_number, grade_number

OPS = {"+": operator.add, "-": operator.sub, "*": operator.mul}
TOOL_NAME = "calculator"


@dataclasses.dataclass(frozen=True)
class Problem:
    a: int
    op: str
    b: int

    @property
    def expression(self) -> str:
        return f"{self.a} {self.op} {self.b}"

    @property
    def prompt(self) -> str:
        return f"What is {self.expression}?"

    @property
    def answer(self) -> int:
        return OPS[self.op](self.a, self.b)


def _check_args(n: int, digits: tuple[int, int], ops: str) -> None:
    if len(digits) != 2 or min(digits) < 1 or max(digits) > 18:
        raise TaskError(f"arithmetic: digits must be two numbers from 1 to 18 (digits of a and "
                         f"of b, e.g. 4,3), got {digits}")
    if not ops or set(ops) - set(OPS):
        raise TaskError(f"arithmetic: ops must be made of {''.join(OPS)}, got {ops!r}")
    space = 9 * 10 ** (digits[0] - 1) * 9 * 10 ** (digits[1] - 1) * len(set(ops))
    if not 1 <= n <= space // 2:
        raise TaskError(f"arithmetic: n must be between 1 and {space // 2} for {digits[0]}- by "
                         f"{digits[1]}-digit {ops!r} problems (half the {space} there are), "
                         f"got {n}")


def _number(rng: random.Random, digits: int) -> int:
    return rng.randrange(10 ** (digits - 1), 10 ** digits)  # exactly `digits` digits


def problems(n: int, *, seed: int = 0, digits: tuple[int, int] = (4, 3), ops: str = "+-*",
             exclude: frozenset[Problem] = frozenset(), stream: str = "") -> list[Problem]:
    """`n` distinct problems, none in `exclude`; a has digits[0] digits, b digits[1].
    Each (seed, stream) is its own random sequence."""
    _check_args(n, tuple(digits), ops)
    rng = random.Random(f"arithmetic-{stream}-{seed}-{digits[0]}-{digits[1]}-{ops}")
    out, seen = [], set(exclude)
    while len(out) < n:
        p = Problem(_number(rng, digits[0]), rng.choice(ops), _number(rng, digits[1]))
        if p not in seen:
            seen.add(p)
            out.append(p)
    return out


def split(n_train: int, n_held_out: int, *, seed: int = 0, digits: tuple[int, int] = (4, 3),
          ops: str = "+-*") -> tuple[list[Problem], list[Problem]]:
    """(train, held_out) problems with no (a, op, b) in common; held_out does not depend on
    n_train, so a larger training set is evaluated on the same problems."""
    held_out = problems(n_held_out, seed=seed, digits=digits, ops=ops, stream="held_out")
    _check_args(n_train + n_held_out, tuple(digits), ops)
    train = problems(n_train, seed=seed, digits=digits, ops=ops, exclude=frozenset(held_out),
                     stream="train")
    return train, held_out


def final_answer(p: Problem) -> str:
    """The assistant's last line, the same with or without the tool."""
    return f"{p.expression} = {p.answer}."


def conversation(p: Problem, *, tool: bool) -> list[dict]:
    """The problem as a conversation, with a calculator round trip when `tool`."""
    messages = [{"role": "user", "content": p.prompt}]
    if tool:
        call = {"id": "call_0", "type": "function",
                "function": {"name": TOOL_NAME,
                             "arguments": json.dumps({"expression": p.expression})}}
        messages += [{"role": "assistant", "content": "", "tool_calls": [call]},
                     {"role": "tool", "tool_call_id": "call_0", "content": str(p.answer)}]
    messages.append({"role": "assistant", "content": final_answer(p)})
    return messages


@dataclasses.dataclass(frozen=True)
class ArithmeticTask:
    """Held-out arithmetic problems; `tool` makes the worked answers call the calculator."""

    digits: tuple[int, int] = (4, 3)
    ops: str = "+-*"
    tool: bool = False
    name: str = "arithmetic"
    kind: str = "generate"
    max_new_tokens: int = 64  # room for the answer (and a tool round trip)

    def __post_init__(self):
        object.__setattr__(self, "digits", tuple(self.digits))
        _check_args(1, self.digits, self.ops)

    def items(self, n: int | None, seed: int = 0) -> list[Item]:
        if n is None:
            raise TaskError("arithmetic: problems are generated; say how many (n)")
        held_out = problems(n, seed=seed, digits=self.digits, ops=self.ops, stream="held_out")
        return [self.item(p) for p in held_out]

    def item(self, p: Problem) -> Item:
        messages = conversation(p, tool=self.tool)
        return Item(prompt=messages[:1], reference=str(p.answer), worked=messages[1:])

    def grade(self, item: Item, completion: str) -> float:
        return grade_number(completion, item.reference)

    def answer(self, completion: str) -> str | None:
        return final_number(completion)
