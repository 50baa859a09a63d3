"""The harness: scripted completions give exactly the expected numbers; a tiny model's report
has the documented shape; the command line writes atomically and refuses to overwrite."""

import collections
import json

import pytest

from evals import __main__ as evals_main
from evals import harness, stats, tasks
from tests.test_export_common import tiny_twofiles_model

TASK = tasks.get("arithmetic", digits=(2, 2), ops="+")


def scripted(script: dict[str, list], calls: list | None = None):
    """A generator answering each prompt with its script's next completion, in order (the
    curve and pairs tests use it too); `calls` records (batch size, seed) of each call."""
    used = collections.Counter()

    def generate(conversations, seed):
        if calls is not None:
            calls.append((len(conversations), seed))
        out = []
        for conv in conversations:
            prompt = conv[0]["content"]
            out.append(script[prompt][used[prompt]])
            used[prompt] += 1
        return out

    return generate


def test_scripted_completions_give_the_exact_numbers():
    items = TASK.items(4, seed=0)
    right = [f"= {it.reference}" for it in items]
    wrong = [f"= {int(it.reference) + 1}" for it in items]
    script = {it.prompt[0]["content"]: s for it, s in zip(items, [
        [(right[0], True), (right[0], True), (right[0], True)],      # 3 of 3
        [(wrong[1], True), (right[1], True), (wrong[1], True)],      # 1 of 3, majority wrong
        [(right[2], False), (right[2] + " or 7", True), ("", True)],  # cut off, hedged, empty
        [(right[3], True), (wrong[3], True), (right[3], True)],      # 2 of 3
    ])}
    calls = []
    report = harness.run_generated(TASK, items, scripted(script, calls), samples=3, seed=10,
                                   batch_size=5, progress=False)
    assert calls == [(5, 10), (5, 15), (2, 20)]  # 12 rows in batches of 5, a seed per batch
    assert report["n"] == 4 and report["samples"] == 3
    assert [it["scores"] for it in report["items"]] == [
        [1, 1, 1], [0, 1, 0], [0, 0, 0], [1, 0, 1]]
    assert report["accuracy"] == pytest.approx((3 + 1 + 0 + 2) / 12)
    assert report["ci95"] == pytest.approx(list(stats.wilson(6 / 3, 4)))
    assert list(report["pass_at_k"]) == ["1", "2", "3"]
    assert report["pass_at_k"]["1"] == pytest.approx(0.5)
    # pass@2 per item: 1, 1 - C(2,2)/C(3,2) = 2/3, 0, 1; pass@3: 1, 1, 0, 1
    assert report["pass_at_k"]["2"] == pytest.approx((1 + 2 / 3 + 0 + 1) / 4)
    assert report["pass_at_k"]["3"] == pytest.approx(3 / 4)
    # majority@1: first samples 1, 0, 0, 1; @3: 1, 0 (wrong twice), 0, 1 (right twice)
    assert report["majority_at_k"] == {"1": 0.5, "2": 0.5, "3": 0.5}
    assert report["items"][1]["completions"] == [wrong[1], right[1], wrong[1]]
    assert report["items"][0]["reference"] == items[0].reference
    assert report["items"][0]["prompt"] == items[0].prompt


def test_a_tiny_models_report(tmp_path):
    m = tiny_twofiles_model()
    report = harness.evaluate(m, TASK, n=3, samples=2, temperature=1.0, seed=1,
                              max_new_tokens=8, progress=False)
    assert report["task"] == "arithmetic" and report["n"] == 3
    assert len(report["items"]) == 3
    for item in report["items"]:
        assert set(item) == {"prompt", "reference", "completions", "scores"}
        assert len(item["completions"]) == len(item["scores"]) == 2
        assert all(isinstance(c, str) for c in item["completions"])
    all_scores = [s for it in report["items"] for s in it["scores"]]
    assert report["accuracy"] == pytest.approx(sum(all_scores) / len(all_scores))
    assert 0 <= report["ci95"][0] <= report["accuracy"] <= report["ci95"][1] <= 1
    assert set(report["pass_at_k"]) == set(report["majority_at_k"]) == {"1", "2"}
    # Each sample is its own draw: at temperature 1 the two samples of a problem differ.
    assert any(len(set(it["completions"])) == 2 for it in report["items"])
    json.dumps(report)  # the report is JSON as it is


def test_a_choice_task_scores_the_likeliest_option():
    from evals.tasks import choice

    m = tiny_twofiles_model()
    task = tasks.get("choice")
    report = harness.evaluate(m, task, n=None, progress=False)
    items = task.items(None)
    assert [it["completions"] for it in report["items"]] == [
        [choice.likeliest(m, it)] for it in items]
    assert report["accuracy"] == pytest.approx(
        sum(it["scores"][0] for it in report["items"]) / len(items))
    with pytest.raises(tasks.TaskError, match="not sampled"):
        harness.evaluate(m, task, n=None, samples=2, progress=False)


@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory):
    from infer.formats.export import export

    out = tmp_path_factory.mktemp("tiny") / "export"
    export(tiny_twofiles_model(), "twofiles", out)
    return str(out / "model.bin")


def _cli(*args):
    return evals_main.main(["run", *args])


def test_the_command_writes_the_report_and_refuses_to_overwrite(tiny_file, tmp_path, capsys):
    out = tmp_path / "report.json"
    flags = ["--model", tiny_file, "--task", "arithmetic", "--digits", "2,2", "--ops", "+",
             "--n", "2", "--max-new-tokens", "8", "--json", str(out)]
    assert _cli(*flags) == 0
    report = json.loads(out.read_text())
    assert report["task"] == "arithmetic" and report["n"] == 2
    assert report["temperature"] == 0.0 and report["model"] == tiny_file
    assert [it["reference"] for it in report["items"]] == [
        it.reference for it in TASK.items(2, seed=0)]
    assert "accuracy" in capsys.readouterr().out

    out.write_text("keep me")
    with pytest.raises(SystemExit) as e:
        _cli(*flags)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "--force" in err and err.count("\n") == 1
    assert out.read_text() == "keep me"
    assert _cli(*flags, "--force", "--samples", "2", "--seed", "3") == 0
    report = json.loads(out.read_text())
    assert report["temperature"] == 0.8 and len(report["items"][0]["completions"]) == 2
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]  # no temporary left


@pytest.mark.parametrize("flags,match", [
    (["--task", "arithmetic", "--samples", "0"], "--samples must be at least 1"),
    (["--task", "arithmetic", "--ops", "/"], "ops must be"),
    (["--task", "gsm", "--file", "x.json"], "--file is for --task choice"),
    (["--task", "arithmetic", "--tools", "shell"], "unknown tool shell"),
])
def test_bad_flags_get_one_line_before_the_model_loads(tmp_path, capsys, flags, match):
    out = tmp_path / "r.json"
    with pytest.raises(SystemExit):
        _cli("--model", str(tmp_path / "no-such-model"), *flags, "--json", str(out))
    err = capsys.readouterr().err
    assert match in err and err.count("\n") == 1
    assert not out.exists()
