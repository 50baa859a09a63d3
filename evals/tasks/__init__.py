"""Tasks: problems with reference answers and one grader each.

    task = tasks.get("arithmetic", digits=(4, 3), ops="*")
    items = task.items(100, seed=0)
    items[0].prompt      # [{"role": "user", "content": "What is 4817 * 293?"}]
    task.grade(items[0], "4817 * 293 = 1411381.")   # 1.0

A task is generated ("generate": the model writes an answer, the grader gives a reward in
[0, 1]) or multiple choice ("choice": every option is scored by the model's log-likelihood and
the likeliest is graded). The same grader serves evaluation, SFT data building and RL rewards.
"""

from __future__ import annotations

import dataclasses
from typing import Protocol


class TaskError(ValueError):
    """A task name or option that does not exist; the message says what does."""


@dataclasses.dataclass(frozen=True)
class Item:
    """One problem, rendered as a conversation.

    prompt: the messages before the assistant's answer. reference: the answer, as the grader
    compares it. worked: the assistant's messages of a correct answer, for training (with tool
    calls and their results where the task uses a tool); None where the task has none.
    options: the choices of a multiple-choice item, with their target scores."""

    prompt: list[dict]
    reference: str
    worked: list[dict] | None = None
    options: dict[str, float] = dataclasses.field(default_factory=dict)

    def conversation(self) -> list[dict]:
        """The prompt followed by the worked answer: one training conversation (SFT data)."""
        if self.worked is None:
            raise TaskError("this item has no worked answer to train on (a choice item)")
        return self.prompt + self.worked


class Task(Protocol):
    name: str
    kind: str  # "generate" or "choice"
    max_new_tokens: int  # the default generation budget for one answer

    def items(self, n: int | None, seed: int = 0) -> list[Item]:
        """n problems from `seed` (None: all of a file's problems)."""

    def grade(self, item: Item, completion: str) -> float:
        """The reward of a completion, in [0, 1]."""

    def answer(self, completion: str) -> str | None:
        """The completion's final answer as the grader reads it (for majority votes)."""


def names() -> list[str]:
    return ["arithmetic", "choice", "gsm"]


def get(name: str, **options) -> Task:
    """The task called `name`: "arithmetic" (digits=(a, b), ops="+-*", tool=False), "gsm",
    or "choice" (path= a BIG-bench task.json; without it, the small built-in set)."""
    from evals.tasks import arithmetic, choice, gsm

    makers = {"arithmetic": arithmetic.ArithmeticTask, "choice": choice.ChoiceTask,
              "gsm": gsm.GsmTask}
    if name not in makers:
        raise TaskError(f"unknown task {name!r}; the tasks are {', '.join(names())}")
    return makers[name](**options)
