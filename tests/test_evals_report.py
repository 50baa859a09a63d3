"""evals report: the report card from run directories (hand-made runs with known numbers, the
command, and the paired gain between rows)."""

import json

import pytest

import model
from evals import __main__ as evals_main
from evals import report, stats

MODEL = {"vocab_size": 320, "d_model": 32, "n_layers": 2, "n_heads": 4,
         "n_kv_heads": 2, "d_ff": 64, "max_seq_len": 64}


def _run(path, section=None, summary=None, metrics=()):
    """A run directory as train writes it: config.json, summary.json, metrics.jsonl."""
    path.mkdir()
    config = {"model": MODEL, "steps": 10}
    for name in ("sft", "dpo", "rm", "rl"):
        config[name] = {"base": "somewhere" if name == section else ""}
    (path / "config.json").write_text(json.dumps(config))
    (path / "summary.json").write_text(json.dumps({"step": 10, **(summary or {})}))
    (path / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics))
    return path


def _eval(path, scores, task="arithmetic"):
    items = [{"prompt": [{"role": "user", "content": f"q{i}"}], "reference": "1",
              "completions": ["x"], "scores": [s]} for i, s in enumerate(scores)]
    n, k = len(scores), sum(scores)
    path.write_text(json.dumps({"task": task, "n": n, "samples": 1, "accuracy": k / n,
                                "ci95": list(stats.wilson(k, n)), "items": items}))
    return path


def test_each_stage_reads_its_own_numbers(tmp_path):
    base = _run(tmp_path / "base", summary={"tokens": 40960, "wall_s": 125.4, "val_loss": 4.5})
    rl = _run(tmp_path / "rl", "rl", {"wall_s": 61, "pass1": 0.5, "base_pass1": 0.25},
              metrics=[{"step": 9, "kl": 0.5, "reward": 0.1, "tokens": 900},
                       {"step": 10, "kl": 0.02, "reward": 0.4, "tokens": 1000},
                       {"step": 10, "pass1": 0.5, "tokens": 1000}])
    dpo = _run(tmp_path / "dpo", "dpo", {"wall_s": 5, "val_accuracy": 0.9,
                                         "base_val_accuracy": 0.5, "val_loss": 0.3})
    rm = _run(tmp_path / "rm", "rm", {"wall_s": 5, "val_accuracy": 0.8})
    params = model.count_params(model.ModelConfig.from_dict(MODEL))["params"]
    b, r, d, m = (report.run_numbers(p) for p in (base, rl, dpo, rm))
    assert (b["stage"], r["stage"], d["stage"], m["stage"]) == ("pretrain", "rl", "dpo", "rm")
    assert b["params"] == params and m["params"] == params + 32  # the reward head: d_model
    assert b["tokens"] == 40960 and r["tokens"] == 1000  # summary's, else the last logged
    assert r["kl"] == 0.02 and r["reward"] == 0.4  # the last logged values
    text = report.markdown([b, d, m, r])
    lines = text.splitlines()
    assert lines[0].startswith("| stage | run | parameters |")
    assert f"| pretrain | base | {params / 1e3:.2f}k | 40.96k | 2 min 05 s | 4.500 |" in text
    assert "preference acc 0.50 → 0.90" in text and "pair acc 0.80" in text
    assert "greedy pass@1 0.25 → 0.50" in text and "| 0.0200 |" in text
    assert "Wall time of the stages together: 3 min 16 s." in text


def test_the_gain_between_rows_is_paired_on_the_same_problems(tmp_path):
    a = report.load_eval(_eval(tmp_path / "a.json", [1, 0, 0, 1] * 25))
    b = report.load_eval(_eval(tmp_path / "b.json", [1, 1, 0, 1] * 25))
    other = report.load_eval(_eval(tmp_path / "c.json", [1, 1, 1]))
    sft, rl, dpo = (str(tmp_path / n) for n in ("sft", "rl", "dpo"))
    rows = [{"run": sft, "name": "sft", "base": "b", "eval": a},
            {"run": dpo, "name": "dpo", "base": sft, "eval": other},
            {"run": rl, "name": "rl", "base": sft, "eval": b}]
    out = report.with_gains(rows, seed=0)
    assert "gain" not in out[0] and "gain" not in out[1]  # no base row / other problems
    # RL is compared with its base, SFT, not with the DPO row above it.
    assert out[2]["gain"] == stats.paired_bootstrap(a["scores"], b["scores"], seed=0)
    assert out[2]["gain"]["diff"] == pytest.approx(0.25) and out[2]["gain_over"] == "sft"


def test_the_command_writes_the_card_and_refuses_a_folder_that_is_not_a_run(tmp_path, capsys):
    base = _run(tmp_path / "base", summary={"tokens": 100, "wall_s": 3, "val_loss": 5.0})
    sft = _run(tmp_path / "sft", "sft", {"wall_s": 4, "val_loss": 0.8})
    out = tmp_path / "card.md"
    assert evals_main.main(["report", str(base), str(sft), "--out", str(out)]) == 0
    text = out.read_text()
    assert "| sft | sft |" in text and "| 0.800 |" in text
    rows = json.loads(out.with_suffix(".json").read_text())["rows"]
    assert [r["stage"] for r in rows] == ["pretrain", "sft"]
    with pytest.raises(SystemExit):
        evals_main.main(["report", str(tmp_path / "nothing"), "--out", str(tmp_path / "x.md")])
    err = capsys.readouterr().err
    assert "no such run directory" in err and err.count("\n") == 1
    (sft / "summary.json").unlink()  # an unfinished run says what to do
    with pytest.raises(SystemExit):
        evals_main.main(["report", str(sft), "--out", str(tmp_path / "y.md")])
    assert "has not finished" in capsys.readouterr().err


def test_kept_evaluations_never_mix_two_runs_named_alike_or_a_run_trained_further(tmp_path):
    """The card reuses a kept evaluation only for the same run as it was when evaluated: two
    `dpo` folders in different places, or one trained on after, each get their own file."""
    from evals import cli_report
    from evals.tasks.arithmetic import ArithmeticTask

    task = ArithmeticTask(digits=(2, 2), ops="+")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = _run(tmp_path / "a" / "dpo")
    second = _run(tmp_path / "b" / "dpo")
    kept = tmp_path / "evals"
    path_first = cli_report.eval_path(kept, str(first), task, 50)
    assert path_first != cli_report.eval_path(kept, str(second), task, 50)
    assert path_first == cli_report.eval_path(kept, str(first), task, 50)  # reused when unchanged
    (first / "summary.json").write_text(json.dumps({"step": 20}))  # trained further
    assert path_first != cli_report.eval_path(kept, str(first), task, 50)
