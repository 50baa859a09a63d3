"""Tasks and their graders: right answers score 1, a table of adversarial completions scores 0,
and the arithmetic generator draws the same problems as the SFT data."""

import json

import numpy as np
import pytest

from evals import tasks
from evals.tasks import arithmetic, choice, grading

ITEM = arithmetic.ArithmeticTask().item(arithmetic.Problem(1200, "+", 34))  # 1234

CALL = '<|tool_call_start|>{"name": "calculator", "arguments": {"expression": "%s"}}'
ADVERSARIAL = {
    "empty": "",
    "whitespace": "  \n ",
    "wrong": "1200 + 34 = 1235.",
    "last number not the answer": "1200 + 34 = 1234\nWait, no: 1235",
    "answer among others": "1233 1234 1235",
    "hedged, answer last": "It is 1235 or 1234.",
    "hedged after the marker": "The answer is 1234. Or maybe 1235.",
    "hedged before the marker": "1235 or 1234 is my guess",
    "prompt echoed": "What is 1200 + 34?",
    "expression echoed": "1200 + 34",
    "operands echoed": "1200 34",
    "answer inside a longer number": "1200 + 34 = 12345",
    "longer number with a comma": "1200 + 34 = 1,2345",
    "answer as a prefix of a decimal": "= 1234.5",
    "negated": "= -1234",
    "unterminated box": "\\boxed{1234",
    "answer only in a tool call": CALL % "1234" + "<|tool_call_end|>",
    "unterminated tool call": CALL % "1200 + 34 = 1234",
    "answer only in a tool output": "<|tool_output_start|>1234<|tool_output_end|>",
    "answer only in an imported-template call": "<tool_call>\n{\"arguments\": 1234}\n</tool_call>",
    "answer only in a tool response": "<tool_response>1234</tool_response>",
}


@pytest.mark.parametrize("name", ADVERSARIAL)
def test_adversarial_completions_score_zero(name):
    assert ITEM.reference == "1234"
    assert arithmetic.ArithmeticTask().grade(ITEM, ADVERSARIAL[name]) == 0.0


@pytest.mark.parametrize("completion", [
    "1200 + 34 = 1234.", "1234", "The answer is 1,234.", "#### 1234", "\\boxed{1234}",
    "**1234**", "Answer: 1234.0", "Adding 1200 and 34 gives 1200 + 34, which is 1234.",
    "1200 + 34 = 1234.\nHope that helps!",
    "<|tool_call_start|>{\"name\": \"calculator\", \"arguments\": {\"expression\": \"1200 + 34\"}}"
    "<|tool_call_end|><|assistant_end|><|tool_output_start|>1234<|tool_output_end|>"
    "<|assistant_start|>1200 + 34 = 1234.",
])
def test_right_answers_score_one(completion):
    assert arithmetic.ArithmeticTask().grade(ITEM, completion) == 1.0


def test_normalise():
    assert grading.normalise("1,234.50") == "1234.5"
    assert grading.normalise("7.000") == "7"
    assert grading.final_number("x = -12.") == "-12"


def test_arithmetic_items_are_held_out_problems_with_worked_answers():
    task = tasks.get("arithmetic", digits=(4, 3), ops="*", tool=True)
    items = task.items(50, seed=3)
    _, held_out = arithmetic.split(10, 50, seed=3, digits=(4, 3), ops="*")
    assert [it.prompt[0]["content"] for it in items] == [p.prompt for p in held_out]
    for it, p in zip(items, held_out):
        assert it.reference == str(p.a * p.b)
        call = it.worked[0]["tool_calls"][0]["function"]
        assert json.loads(call["arguments"]) == {"expression": f"{p.a} * {p.b}"}
        assert task.grade(it, it.worked[-1]["content"]) == 1.0
    assert tasks.get("arithmetic", tool=False).items(1)[0].worked[0]["content"].endswith(".")


def test_arithmetic_problems_are_those_of_the_sft_data():
    from train.datasets import arithmetic as train_arithmetic

    kw = dict(seed=5, digits=(3, 2), ops="+-*")
    assert ([(p.a, p.op, p.b) for p in arithmetic.problems(40, **kw)]
            == [(p.a, p.op, p.b) for p in train_arithmetic.problems(40, **kw)])
    for tool in (False, True):
        task = tasks.get("arithmetic", digits=(3, 2), tool=tool)
        held_out = train_arithmetic.split(1, 5, seed=2, digits=(3, 2))[1]
        assert [it.conversation() for it in task.items(5, seed=2)] == [
            train_arithmetic.conversation(p, tool=tool) for p in held_out]


def test_bad_task_options_are_refused():
    with pytest.raises(tasks.TaskError, match="unknown task 'nope'.*arithmetic"):
        tasks.get("nope")
    with pytest.raises(tasks.TaskError, match="ops must be"):
        tasks.get("arithmetic", ops="/")
    with pytest.raises(tasks.TaskError, match="digits"):
        tasks.get("arithmetic", digits=(0, 3))


def test_gsm_references_are_the_generators_answers_and_worked_answers_grade_one():
    rg = pytest.importorskip("reasoning_gym")
    task = tasks.get("gsm")
    items = task.items(30, seed=1)
    source = list(rg.create_dataset("gsm_symbolic", size=30, seed=1))
    assert [it.reference for it in items] == [str(x["answer"]) for x in source]
    assert all(x["question"] in it.prompt[0]["content"] for it, x in zip(items, source))
    assert all(task.grade(it, it.worked[0]["content"]) == 1.0 for it in items)
    wrong = str(int(items[0].reference) + 1)
    assert task.grade(items[0], f"The answer is {wrong}.") == 0.0
    assert [it.reference for it in task.items(30, seed=1)] == [it.reference for it in items]
    assert [it.reference for it in task.items(30, seed=2)] != [it.reference for it in items]


def test_choice_reads_big_bench_files(tmp_path):
    path = tmp_path / "task.json"
    path.write_text(json.dumps({"task_prefix": "Q: ", "examples": [
        {"input": "a?", "target_scores": {"x": 0, "y": 1}},
        {"input": "b?", "target_scores": {"x": 1, "y": 0, "z": 0.5}}]}))
    task = tasks.get("choice", path=str(path))
    items = task.items(None)
    assert [it.prompt[0]["content"] for it in items] == ["Q: a?", "Q: b?"]
    assert [it.reference for it in items] == ["y", "x"]
    assert [task.grade(items[1], o) for o in ("x", "y", "z", "w")] == [1.0, 0.0, 0.5, 0.0]
    assert len(tasks.get("choice").items(3, seed=0)) == 3


@pytest.mark.parametrize("doc,match", [
    ("not json", "is not JSON"), ({"examples": []}, "non-empty"),
    ({"examples": [{"input": "a", "target_scores": {"x": 1}}]}, "example 0"),
    ({"examples": [{"input": "a", "target_scores": {"x": 0, "y": 0}}]}, "example 0"),
])
def test_bad_choice_files_are_refused_with_the_file_named(tmp_path, doc, match):
    path = tmp_path / "task.json"
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    with pytest.raises(tasks.TaskError, match=match):
        tasks.get("choice", path=str(path)).items(None)
    with pytest.raises(tasks.TaskError, match="cannot read"):
        tasks.get("choice", path=str(tmp_path / "missing.json")).items(None)


def test_option_logprobs_are_the_sum_of_token_logprobs_by_full_forwards():
    from infer.runtime.engine import prompt_ids
    from tests.test_export_common import tiny_twofiles_model

    m = tiny_twofiles_model()
    item = tasks.get("choice").items(None)[0]
    scores = choice.option_logprobs(m, item)
    prompt = prompt_ids(m, item.prompt, chat=True)
    for option, got in scores.items():
        ids = prompt + m.tokenizer.encode_ordinary(option)
        expected = 0.0
        for t in range(len(prompt), len(ids)):  # one full forward per option token
            logits = m.logits(ids[:t])[-1].astype(np.float64)
            expected += logits[ids[t]] - np.log(np.exp(logits - logits.max()).sum()) - logits.max()
        assert got == pytest.approx(expected, abs=1e-3)
    assert choice.likeliest(m, item) == max(scores, key=scores.get)


def test_gsm_without_reasoning_gym_says_what_to_install(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "reasoning_gym", None)  # import fails
    with pytest.raises(tasks.TaskError, match="pip install --no-deps reasoning-gym"):
        tasks.get("gsm")
