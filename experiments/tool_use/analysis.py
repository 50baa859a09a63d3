"""The experiment's numbers: each cell's accuracy with its Wilson interval, and the tool's gap.

    cell(correct=93, n=100)                  # {"accuracy": 0.93, "ci95": [0.863, 0.966], ...}
    gap(cell(93, 100), cell(2, 100))          # {"diff": 0.91, "ci95": [...], "paired": {...}}
    copies(report)                            # calls, operands copied in, results copied out

The gap's interval is Newcombe's hybrid score interval (Newcombe 1998, "Interval estimation for
the difference between independent proportions", method 10): it combines the two Wilson
intervals, stays inside [-1, 1] and keeps its coverage at 0/n and n/n, where the Wald interval
p1 - p2 +- z*se collapses, and those are exactly where a model with and one without a calculator
land. It treats the two accuracies as independent; both arms are scored on the same held-out
problems, so the paired bootstrap (`evals.stats.paired_bootstrap`, which keeps each problem's
two scores together) is given beside it, and is the tighter of the two when the arms find the
same problems hard.
"""

from __future__ import annotations

import math
import re
from typing import Sequence

from evals import stats
from evals.tasks.grading import final_number


def cell(correct: float, n: int) -> dict:
    """Accuracy of `correct` successes out of `n` problems, with its 95% Wilson interval."""
    lo, hi = stats.wilson(correct, n)
    return {"correct": correct, "n": n, "accuracy": correct / n, "ci95": [lo, hi]}


def newcombe_difference(c1: float, n1: int, c2: float, n2: int) -> tuple[float, float, float]:
    """(p1 - p2, lower, upper): the 95% hybrid score interval of a difference of proportions."""
    p1, p2 = c1 / n1, c2 / n2
    l1, u1 = stats.wilson(c1, n1)
    l2, u2 = stats.wilson(c2, n2)
    d = p1 - p2
    lower = d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
    upper = d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
    return d, max(-1.0, lower), min(1.0, upper)


def gap(a: dict, b: dict, scores_a: Sequence[float] | None = None,
        scores_b: Sequence[float] | None = None) -> dict:
    """Accuracy of cell `a` minus cell `b`, with Newcombe's interval; with both cells' per-problem
    scores (the same problems in the same order), also the paired bootstrap interval."""
    d, lo, hi = newcombe_difference(a["correct"], a["n"], b["correct"], b["n"])
    out = {"diff": d, "ci95": [lo, hi], "method": "newcombe hybrid score (95%)"}
    if scores_a is not None and scores_b is not None:
        boot = stats.paired_bootstrap(scores_b, scores_a)  # its diff is mean(a) - mean(b)
        out["paired"] = {"diff": boot["diff"], "ci95": boot["ci"], "a_only": boot["b_only"],
                         "b_only": boot["a_only"], "method": "paired bootstrap (95%, "
                         f"{boot['resamples']} resamples of problems)"}
    return out


_CALL = re.compile(r'"expression": "(.*?)"')
_OUTPUT = re.compile(r"<\|tool_output_start\|>(.*?)<\|tool_output_end\|>", re.DOTALL)


def copies(report: dict) -> dict:
    """Where the calculator model's answers go wrong: of the harness report's items, how many
    make a call, copy the question's expression into it exactly, and copy the tool's result
    exactly into the final line (an answer is right when it does both)."""
    calls = expression = result = both = 0
    for item in report["items"]:
        question = item["prompt"][-1]["content"]
        text = item["completions"][0]
        call, output = _CALL.search(text), _OUTPUT.search(text)
        said = final_number(text)
        copied_expression = bool(call) and f"What is {call.group(1)}?" == question
        copied_result = bool(output) and said is not None and said == output.group(1).strip()
        calls += bool(call)
        expression += copied_expression
        result += copied_result
        both += copied_expression and copied_result
    return {"n": len(report["items"]), "calls": calls, "expression_copied": expression,
            "result_copied": result, "both": both}
