"""The tool-use experiment's own parts: equal-token arms, and the gap's interval.

The training itself is train.sft's and the scoring evals.harness's (tested elsewhere); here: the
two arms' data really give the same tokens (counted by rendering each conversation here, not by
the builder's own tally), and the analysis gives published numbers on hand-made counts.
"""

from __future__ import annotations

import pytest

from evals.tasks import arithmetic
from experiments.tool_use import analysis, data
from infer.chat.render import render
from infer.formats import tokenizer_file
from train import tokenizer as tokenizer_lib


@pytest.fixture(scope="module")
def enc():
    text = ["What is 4817 * 293? 4817 * 293 = 1411381. " * 3,
            '{"name": "calculator", "arguments": {"expression": "12 * 34"}}']
    ranks, pattern = tokenizer_lib.train_tokenizer(text, 300)
    return tokenizer_file.encoding(ranks, pattern)


def _tokens(enc, conversations):
    return sum(len(render(enc, c)[0]) for c in conversations)


def test_arms_have_the_same_tokens_within_half_a_conversation(enc):
    arms = data.build_arms(enc, 60, digits=(4, 3), ops="*", n_held_out=50)
    tool, head = _tokens(enc, arms.tool), _tokens(enc, arms.head)
    assert arms.tokens == {"tool": tool, "head": head}
    longest_head = max(len(render(enc, c)[0]) for c in arms.head)
    assert abs(tool - head) <= longest_head / 2
    # A tool conversation is longer, so the head arm has more problems for the same tokens.
    assert len(arms.tool) == 60 and len(arms.head) > 2 * len(arms.tool)
    assert all(any("tool_calls" in m for m in c) for c in arms.tool)
    assert not any("tool_calls" in m or m["role"] == "tool" for c in arms.head for m in c)


def test_arms_never_train_on_a_held_out_problem(enc):
    arms = data.build_arms(enc, 40, digits=(2, 1), ops="*", n_held_out=30)
    held_out = {p.prompt for p in arithmetic.problems(30, digits=(2, 1), ops="*",
                                                      stream="held_out")}
    prompts = {c[0]["content"] for c in arms.tool + arms.head}
    assert not prompts & held_out


# Newcombe (1998), Statistics in Medicine 17:873-890, Table II, method 10 (score, no continuity
# correction): the published 95% limits for the difference of two independent proportions.
@pytest.mark.parametrize("c1, n1, c2, n2, lower, upper", [
    (56, 70, 48, 80, 0.0524, 0.3339),
    (9, 10, 3, 10, 0.1705, 0.8090),
    (5, 56, 0, 29, -0.0381, 0.1926),
    (0, 10, 0, 20, -0.1611, 0.2775),
])
def test_gap_interval_is_newcombes(c1, n1, c2, n2, lower, upper):
    g = analysis.gap(analysis.cell(c1, n1), analysis.cell(c2, n2))
    assert g["diff"] == pytest.approx(c1 / n1 - c2 / n2)
    assert g["ci95"] == pytest.approx([lower, upper], abs=6e-5)


def test_gap_with_scores_adds_the_paired_interval():
    # 10 problems: the tool model solves 9, the head model 1 (problem 0, also solved by the
    # tool model). Paired: 8 problems gained, none lost, so every resample's gain is >= 0.
    a = [1.0] * 9 + [0.0]
    b = [1.0] + [0.0] * 9
    g = analysis.gap(analysis.cell(sum(a), 10), analysis.cell(sum(b), 10), a, b)
    assert g["diff"] == pytest.approx(0.8)
    assert g["paired"]["diff"] == pytest.approx(0.8)
    assert (g["paired"]["a_only"], g["paired"]["b_only"]) == (8, 0)
    lo, hi = g["paired"]["ci95"]
    assert 0.0 < lo < 0.8 < hi <= 1.0
    assert g["ci95"][0] < lo  # Newcombe ignores the pairing, so it is the wider one here


def test_pretraining_prose_is_worked_right_and_leaves_out_held_out_problems():
    from experiments.tool_use.corpus import arithmetic_lines

    held_out = arithmetic.problems(200, digits=(4, 3), ops="*", stream="held_out")
    lines = arithmetic_lines(900, held_out=frozenset(held_out))
    assert len(lines) == 900  # 100 of each of the 9 operand sizes, the smallest has 121
    questions, fillers = set(), set()
    for line in lines:
        question, rest = line.split("? ", 1)
        expression = question.removeprefix("What is ")
        assert rest.endswith(f"{expression} = {eval(expression)}.")  # Python's arithmetic
        questions.add(question + "?")
        fillers.add(rest[:rest.rindex(expression)])
    assert not questions & {p.prompt for p in held_out}
    assert "" in fillers and len(fillers) > 3  # operands come back at varying distances


def test_copies_counts_each_way_an_answer_goes_wrong():
    def item(question, expression, output, final):
        text = ('<|tool_call_start|>{"name": "calculator", "arguments": {"expression": "'
                f'{expression}"}}}}<|tool_call_end|><|assistant_end|><|tool_output_start|>'
                f"{output}<|tool_output_end|><|assistant_start|>{final}")
        return {"prompt": [{"role": "user", "content": f"What is {question}?"}],
                "completions": [text]}

    report = {"items": [
        item("5436 * 474", "5436 * 474", "2576664", "5436 * 474 = 2576664."),  # both: right
        item("5436 * 474", "5436 * 494", "2685384", "5436 * 474 = 2685384."),  # result only
        item("1217 * 326", "1217 * 326", "396742", "1217 * 326 = 396741."),    # operands only
        item("9692 * 996", "6692 * 996", "6665232", "6692 * 996 = 3665230."),  # neither
        {"prompt": [{"role": "user", "content": "What is 12 * 34?"}],
         "completions": ["12 * 34 = 408."]},                                  # no call
    ]}
    assert analysis.copies(report) == {"n": 5, "calls": 4, "expression_copied": 2,
                                       "result_copied": 2, "both": 1}
