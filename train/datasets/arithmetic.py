"""Synthetic arithmetic for SFT: "What is 4817 * 293?", answered through a calculator or in the head.

    problems = arithmetic.problems(100, seed=0, digits=(4, 3), ops="*")
    arithmetic.conversation(problems[0], tool=True)

The problems, splits and conversations are the `arithmetic` evaluation task's own
(evals/tasks/arithmetic.py, which documents the conversation layout), so training data, held-out
problems and the grader share one generator and one answer format.
"""

from evals.tasks.arithmetic import (  # noqa: F401  (this module's interface)
    OPS, TOOL_NAME, Problem, conversation, final_answer, problems, split)
