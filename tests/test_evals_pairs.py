"""evals pairs: on-policy preference pairs from graded samples (pairing by hand, the command
with a scripted model, the output read back by train's own pair checker)."""

import json

import pytest

from evals import __main__ as evals_main
from evals import cli_pairs, harness, tasks
from train.datasets.preferences import iter_file

TASK = tasks.get("arithmetic", digits=(2, 2), ops="+")


def test_pairs_put_a_right_answer_over_a_wrong_one_and_count_the_skipped():
    items = TASK.items(4, seed=0)
    right = [f"{it.reference}." for it in items]
    completions = [
        [(right[0], True), ("0.", True), ("1.", True)],        # 1 right, 2 wrong: one pair
        [(right[1], True), (right[1], True)],                  # all right: skipped
        [("5.", True), ("6.", True)],                          # all wrong: skipped
        [(right[3], False), ("7.", False)],                    # every sample cut off
    ]
    scores = [[TASK.grade(it, t) for t, _ in cs] for it, cs in zip(items, completions)]
    pairs, counts = cli_pairs.make_pairs(items, completions, scores, seed=0)
    assert counts == {"problems": 4, "pairs": 1, "all_correct": 1, "all_wrong": 1,
                      "none_finished": 1, "unfinished_samples": 2,
                      "reference_pairs": 0}
    (pair,) = pairs
    assert pair["prompt"] == items[0].prompt
    assert pair["chosen"] == {"role": "assistant", "content": right[0]}
    assert pair["rejected"]["content"] in {"0.", "1."}


def test_several_pairs_per_problem_use_each_answer_once_and_partial_scores_sit_out():
    (item,) = TASK.items(1, seed=0)
    texts = ["a", "b", "c", "x", "y", "half"]
    completions = [[(t, True) for t in texts]]
    scores = [[1.0, 1.0, 1.0, 0.0, 0.0, 0.5]]
    pairs, counts = cli_pairs.make_pairs([item], completions, scores, per_problem=5)
    assert counts["pairs"] == 2  # two wrong answers limit it
    assert len({p["chosen"]["content"] for p in pairs}) == 2
    assert {p["rejected"]["content"] for p in pairs} == {"x", "y"}
    assert all(p["chosen"]["content"] in "abc" for p in pairs)


def _scripted_generator(model, *, max_new_tokens, temperature, **_):
    """Answers every problem right on even rows of a batch and wrong (one more) on odd."""
    def generate(conversations, seed):
        out = []
        for i, conv in enumerate(conversations):
            a, b = (int(x) for x in conv[0]["content"][len("What is "):-1].split(" + "))
            out.append((f"{a} + {b} = {a + b + (i % 2)}.", True))
        return out
    return generate


def test_the_command_writes_pairs_train_dpo_reads(tmp_path, monkeypatch, capsys):
    import infer.cli.args

    monkeypatch.setattr(infer.cli.args, "load_model", lambda src: object())
    monkeypatch.setattr(harness, "engine_generator", _scripted_generator)
    out = tmp_path / "pairs.jsonl"
    args = ["pairs", "--model", "m", "--task", "arithmetic", "--digits", "2,2", "--ops", "+",
            "--n", "30", "--samples", "2", "--seed", "0", "--held-out", "10", "--out", str(out)]
    assert evals_main.main(args) == 0
    pairs = [p for _, p in iter_file(out)]  # train's own checker accepts every line
    # Seed 0 is the evaluation stream itself: its first 10 problems are dropped.
    held_out = {json.dumps(it.prompt) for it in TASK.items(10, seed=0)}
    assert len(pairs) == 20 and not {json.dumps(p.prompt) for p in pairs} & held_out
    for p in pairs:
        item = tasks.arithmetic.ArithmeticTask(digits=(2, 2), ops="+").item(
            tasks.arithmetic.Problem(*_operands(p.prompt)))
        assert TASK.grade(item, p.chosen["content"]) == 1.0
        assert TASK.grade(item, p.rejected["content"]) == 0.0
    counts = json.loads((tmp_path / "pairs.jsonl.counts.json").read_text())
    assert counts["held_out_dropped"] == 10 and counts["pairs"] == 20
    assert counts["sample_accuracy"] == 0.5
    assert "20 pairs from 20 problems" in capsys.readouterr().out

    with pytest.raises(SystemExit):  # an existing file is kept without --force
        evals_main.main(args)
    assert len(out.read_text().splitlines()) == 20


def _operands(prompt):
    a, b = prompt[0]["content"][len("What is "):-1].split(" + ")
    return int(a), "+", int(b)


@pytest.mark.parametrize("flags,match", [
    (["--samples", "1"], "at least 2"),
    (["--temperature", "0"], "must be > 0"),
    (["--held-out", "-1"], "--held-out"),
])
def test_bad_flags_get_one_line_before_the_model_loads(tmp_path, capsys, flags, match):
    out = tmp_path / "p.jsonl"
    with pytest.raises(SystemExit):
        evals_main.main(["pairs", "--model", str(tmp_path / "none"), "--task", "arithmetic",
                         *flags, "--out", str(out)])
    err = capsys.readouterr().err
    assert match in err and err.count("\n") == 1 and not out.exists()


def test_a_model_never_right_can_take_the_worked_answer_as_chosen():
    (item,) = TASK.items(1, seed=0)
    completions, scores = [[("0.", True), ("1.", True)]], [[0.0, 0.0]]
    assert cli_pairs.make_pairs([item], completions, scores)[0] == []  # on-policy: nothing
    pairs, counts = cli_pairs.make_pairs([item], completions, scores, reference_chosen=True)
    assert counts["reference_pairs"] == 1 and counts["all_wrong"] == 1
    assert pairs[0]["chosen"] == {"role": "assistant", "content": item.worked[0]["content"]}
    assert TASK.grade(item, pairs[0]["chosen"]["content"]) == 1.0
