"""The gsm task: grade-school word problems from reasoning-gym's procedural GSM-style generators.

    task = GsmTask()
    item = task.items(10, seed=0)[0]
    item.prompt[0]["content"]   # "James gets 160 emails a day. ... End with 'The answer is N.'"
    task.grade(item, "... so he answers 560 of them.\nThe answer is 560.")   # 1.0

reasoning-gym (Apache-2.0, offline) instantiates about 100 GSM8K-derived templates with seeded
numbers (its `gsm_symbolic` dataset); its answers are the references, its step-by-step solutions
the worked answers. The grade is our own final-number grader (evals.tasks.grading), not the
package's scorer, so every numeric task is graded by one rule. The prompt asks for a final
"The answer is N." line, which that rule reads.
"""

from __future__ import annotations

import dataclasses
import re

from evals.tasks import Item, TaskError
from evals.tasks.grading import final_number, grade_number

INSTRUCTION = "End your reply with a line 'The answer is N.', N being a number."
_FINAL = re.compile(r"\n?#### *(\S+)\s*$")


def _reasoning_gym():
    try:
        import reasoning_gym
    except ImportError as e:
        raise TaskError("gsm: needs the reasoning-gym package (pip install --no-deps "
                        "reasoning-gym; it works offline)") from e
    return reasoning_gym


def _worked(solution: str) -> str:
    """reasoning-gym's solution with its closing "#### N" as the line the prompt asks for."""
    return _FINAL.sub(lambda m: f"\nThe answer is {m.group(1)}.", solution.strip())


@dataclasses.dataclass(frozen=True)
class GsmTask:
    name: str = "gsm"
    kind: str = "generate"
    max_new_tokens: int = 512  # room for the reasoning and the final line

    def __post_init__(self):
        _reasoning_gym()  # a missing package is reported before a model is loaded

    def items(self, n: int | None, seed: int = 0) -> list[Item]:
        if n is None or n < 1:
            raise TaskError(f"gsm: problems are generated; n must be at least 1, got {n}")
        return [Item(prompt=[{"role": "user", "content": f"{x['question']}\n{INSTRUCTION}"}],
                     reference=str(x["answer"]),
                     worked=[{"role": "assistant",
                              "content": _worked(x["metadata"]["answer_cot"])}])
                for x in _reasoning_gym().create_dataset("gsm_symbolic", size=n, seed=seed)]

    def grade(self, item: Item, completion: str) -> float:
        return grade_number(completion, item.reference)

    def answer(self, completion: str) -> str | None:
        return final_number(completion)
