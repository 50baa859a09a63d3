"""The pipeline's measurements: the report card's rows, best-of-n by the reward model, and the
headline numbers (each gain with its paired-bootstrap 95% interval) as one results dict."""

from __future__ import annotations

import json
from pathlib import Path

from experiments.pipeline import stages
from experiments.pipeline.settings import Settings


def card(s: Settings, runs: list[str], out: Path) -> list[dict]:
    """The report card's rows: every stage scored greedy on the same held-out problems (kept in
    OUT/evals, so a rerun does not evaluate again)."""
    from evals import cli_report

    return cli_report.card(runs, task=stages.task(s), n=s.held_out, evals_dir=out / "evals")


def best_of_n(s: Settings, sft_dir: str, rm_dir: str, out: Path, progress: bool) -> dict:
    """s.best_of samples of the SFT model per held-out problem, ranked by the reward model and
    by majority vote (evals.curve); kept in OUT/evals/best_of.json."""
    import infer
    from evals import cli_curve, harness, reward_model

    path = out / "evals" / f"best_of_{s.best_of}.json"
    if path.exists():
        return json.loads(path.read_text())
    t = stages.task(s)
    items = t.items(s.best_of_problems, seed=0)
    generate = harness.engine_generator(infer.load(sft_dir), max_new_tokens=t.max_new_tokens,
                                        temperature=0.8)
    report = cli_curve.measure(t, items, generate, samples=s.best_of, seed=0,
                               rm=reward_model.load(rm_dir), progress=progress)
    harness.write_json(report, path)
    return report


def rl_sampled(s: Settings, sft_dir: str, rl_dir: str, out: Path, progress: bool) -> dict:
    """RL's gain over SFT in sampled pass@1: s.rl_eval_samples samples of each held-out problem
    at the rollouts' temperature, paired bootstrap over problems; kept in OUT/evals."""
    from evals import harness
    from experiments.rl_batch.sampled import sampled_gain

    path = out / "evals" / f"rl_sampled_k{s.rl_eval_samples}_T{s.rl_temperature}.json"
    if path.exists():
        return json.loads(path.read_text())
    report = sampled_gain(sft_dir, rl_dir, k=s.rl_eval_samples, temperature=s.rl_temperature,
                          n=s.held_out, greedy=False, task_options=stages.task_options(s),
                          progress=progress)
    harness.write_json(report, path)
    return report


def _row(rows: list[dict], stage: str) -> dict:
    return next(r for r in rows if r["stage"] == stage)


def _curve_at(curve: dict, method: str, n: int) -> dict:
    i = curve["ns"].index(n)
    return {"accuracy": curve[method]["accuracy"][i], "ci95": curve[method]["ci95"][i]}


def pair_accuracy_ci(row: dict) -> list[float] | None:
    """The Wilson 95% interval of a DPO or RM row's held-out pair accuracy, over the run's
    held-out pairs (a tie counts one half, as in the accuracy)."""
    from evals import stats

    n = json.loads((Path(row["run"]) / "summary.json").read_text()).get("val_pairs")
    if not n or row.get("pair_accuracy") is None:
        return None
    return list(stats.wilson(row["pair_accuracy"] * n, n))


def kl_series(rl_dir: str) -> list[float]:
    from evals.report import read_metrics

    return [m["kl"] for m in read_metrics(Path(rl_dir)) if "kl" in m]


def results(s: Settings, rows: list[dict], curve: dict, wall_s: float,
            sampled: dict | None = None) -> dict:
    """The numbers the issue asks for, read off the card and the best-of-n curve."""
    from evals import stats

    sft, dpo, rm, rl = (_row(rows, n) for n in ("sft", "dpo", "rm", "rl"))
    kl = kl_series(rl["run"])
    oracle_1 = curve["oracle"]["per_problem"]
    rm_n = curve["reward_model"]["per_problem"]
    last = curve["ns"].index(s.best_of)
    drop = stats.paired_bootstrap(dpo["eval"]["scores"], sft["eval"]["scores"])
    return {
        "settings": {k: list(v) if isinstance(v, tuple) else v
                     for k, v in s.__dict__.items()},
        "held_out_problems": s.held_out,
        "accuracy": {r["stage"]: {"accuracy": r["eval"]["accuracy"], "ci95": r["eval"]["ci95"]}
                     for r in rows if r.get("eval")},
        "rl": {"gain_over_sft": rl["gain"], "kl_last": kl[-1] if kl else None,
               "kl_max": max(kl) if kl else None, "kl_mean": sum(kl) / len(kl) if kl else None,
               "steps": rl["steps"],
               "sampled_pass1_gain": sampled and {k: v for k, v in sampled.items()
                                                  if not k.endswith("per_problem")}},
        "dpo": {"val_preference_accuracy": dpo.get("pair_accuracy"),
                "val_preference_accuracy_ci95": pair_accuracy_ci(dpo),
                "base_val_preference_accuracy": dpo.get("base_pair_accuracy"),
                "gain_over_sft": dpo["gain"],
                "accuracy_drop_vs_sft": drop},  # sft - dpo: > 0 is a loss
        "rm": {"val_pair_accuracy": rm.get("pair_accuracy"),
               "val_pair_accuracy_ci95": pair_accuracy_ci(rm),
               "base_val_pair_accuracy": rm.get("base_pair_accuracy")},
        "best_of": {
            "n": s.best_of, "problems": curve["n"], "temperature": 0.8,
            "pass_at_1": _curve_at(curve, "oracle", 1),
            "reward_model": _curve_at(curve, "reward_model", s.best_of),
            "majority": _curve_at(curve, "majority", s.best_of),
            "oracle": _curve_at(curve, "oracle", s.best_of),
            "rm_gain_over_pass1": stats.paired_bootstrap([p[0] for p in oracle_1],
                                                         [p[last] for p in rm_n])},
        "stage_wall_s": {r["stage"]: r["wall_s"] for r in rows},
        "pipeline_wall_s": wall_s,
    }


def summary_lines(res: dict) -> list[str]:
    """The headline numbers as sentences for the terminal and the report."""
    def ci(d, key="ci"):
        lo, hi = d[key]
        return f"[{lo:+.3f}, {hi:+.3f}]"

    def wilson(d, key):
        return "" if d.get(key) is None else " [{:.3f}, {:.3f}]".format(*d[key])

    rl, dpo, rm, b = res["rl"], res["dpo"], res["rm"], res["best_of"]
    sp = rl.get("sampled_pass1_gain")
    acc = res["accuracy"]
    kl = f"{rl['kl_last']:.4f} (max {rl['kl_max']:.4f})" if rl["kl_last"] is not None else "n/a"
    return [
        f"RL: held-out greedy accuracy {acc['sft']['accuracy']:.3f} (SFT) -> "
        f"{acc['rl']['accuracy']:.3f}, gain {rl['gain_over_sft']['diff']:+.3f} "
        f"{ci(rl['gain_over_sft'])} (paired bootstrap 95%, n={res['held_out_problems']}); "
        f"per-token KL to SFT at the end {kl}.",
        *([] if not sp else [
            f"RL, sampled pass@1 ({sp['k']} samples per problem at T {sp['temperature']}): "
            f"{sp['base_pass1']:.3f} (SFT) -> {sp['pass1']:.3f}, gain {sp['gain']:+.3f} "
            f"{ci(sp)} (paired bootstrap 95% over n={sp['n']} problems)."]),
        f"DPO: held-out preference accuracy {dpo['base_val_preference_accuracy']:.3f} -> "
        f"{dpo['val_preference_accuracy']:.3f}"
        f"{wilson(dpo, 'val_preference_accuracy_ci95')}; "
        f"task accuracy {acc['sft']['accuracy']:.3f} -> "
        f"{acc['dpo']['accuracy']:.3f} (change {dpo['gain_over_sft']['diff']:+.3f} "
        f"{ci(dpo['gain_over_sft'])}).",
        f"Reward model: held-out pair accuracy {rm['base_val_pair_accuracy']:.3f} -> "
        f"{rm['val_pair_accuracy']:.3f}{wilson(rm, 'val_pair_accuracy_ci95')}.",
        f"Best-of-{b['n']} by the reward model {b['reward_model']['accuracy']:.3f} vs pass@1 "
        f"{b['pass_at_1']['accuracy']:.3f} of the SFT model at temperature {b['temperature']} "
        f"(gain {b['rm_gain_over_pass1']['diff']:+.3f} {ci(b['rm_gain_over_pass1'])}; "
        f"majority@{b['n']} {b['majority']['accuracy']:.3f}, oracle pass@{b['n']} "
        f"{b['oracle']['accuracy']:.3f}; {b['problems']} held-out problems).",
    ]
