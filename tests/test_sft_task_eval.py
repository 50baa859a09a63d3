"""The eval hook runs a task: an SFT run with sft.eval_task logs greedy task accuracy with its
interval at each evaluation, and its last number is what the harness measures on the saved
run; a bad task is refused before anything is written."""

import json

import pytest

import infer
from evals import harness, tasks
from model.config import ConfigError
from train import config as train_config
from train import metrics, sft
from train.datasets import conversations

OPTIONS = {"digits": [1, 1], "ops": "+"}
TASK = tasks.get("arithmetic", **OPTIONS)
HELD_OUT = TASK.items(8, seed=0)  # what the hook scores (the task's seed 0)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A tiny base whose tokenizer knows the sums, and the held-out problems' own worked
    answers as training data: memorised, they give the hook something to find."""
    from tests.test_export_common import CORPUS
    from tests.train_helpers import export_tiny_base

    root = tmp_path_factory.mktemp("sft_task")
    chats = [it.conversation() for it in HELD_OUT]
    export_tiny_base(root, CORPUS * 2 + [json.dumps(chats)] * 8)
    conversations.write(root / "train.jsonl", chats)
    return root


def sft_config(files, **sets):
    d = {"data": {"batch_size": 8}, "steps": 150, "eval_every": 75, "checkpoint_every": 150,
         "log_every": 10, "optim": {"lr": 1e-2, "warmup_steps": 0, "weight_decay": 0.0},
         "sft": {"base": str(files / "base"), "data": str(files / "train.jsonl"),
                 "eval_task": "arithmetic", "eval_task_options": json.dumps(OPTIONS),
                 "eval_problems": len(HELD_OUT), "eval_max_new_tokens": 16}}
    return train_config.apply_overrides(train_config.from_dict(d),
                                        [f"{k}={v}" for k, v in sets.items()])


def test_each_evaluation_logs_task_accuracy_as_the_harness_measures_it(files):
    out = files / "run"
    summary = sft.run(sft_config(files), out, progress=False)
    rows = [r for r in metrics.read(out) if "task_accuracy" in r]
    assert [r["step"] for r in rows] == [75, 150]
    for r in rows:
        assert r["task_n"] == len(HELD_OUT)
        assert 0 <= r["task_accuracy_lo"] <= r["task_accuracy"] <= r["task_accuracy_hi"] <= 1
    print(f"task accuracy: base {summary['base_task_accuracy']}, "
          f"{[r['task_accuracy'] for r in rows]}")
    assert summary["base_task_accuracy"] == 0.0  # a random model does not add
    assert rows[-1]["task_accuracy"] >= 0.5  # it memorised its own test
    # The independent path: the saved run, loaded as any model, through the harness (greedy).
    report = harness.evaluate(infer.load(out), TASK, n=len(HELD_OUT), max_new_tokens=16,
                              progress=False)
    assert rows[-1]["task_accuracy"] == pytest.approx(report["accuracy"])
    assert summary["task_accuracy"] == rows[-1]["task_accuracy"]


@pytest.mark.parametrize("sets,match", [
    ({"sft.eval_task": "chess"}, "unknown task"),
    ({"sft.eval_task": "choice", "sft.eval_task_options": ""}, "log-likelihood"),
    ({"sft.eval_task_options": "[2]"}, "sft.eval_task_options must be a JSON object"),
    ({"sft.eval_max_new_tokens": 60}, "exceeds the model's context"),
])
def test_a_bad_task_is_refused_before_anything_is_written(files, sets, match):
    out = files / "never"
    with pytest.raises(ConfigError, match=match):
        sft.run(sft_config(files, **sets), out, progress=False)
    assert not out.exists()
