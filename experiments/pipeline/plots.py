"""The pipeline's figure: DPO's held-out margin and accuracy, RL's reward and KL, accuracy per
stage with intervals, and best-of-n by the reward model."""

from __future__ import annotations

from pathlib import Path


def _series(metrics: list[dict], key: str) -> tuple[list[int], list[float]]:
    points = [(m["step"], m[key]) for m in metrics if key in m]
    return [p[0] for p in points], [p[1] for p in points]


def draw(rows: list[dict], curve: dict, path: Path) -> None:
    """Writes a 2 x 2 figure to `path` (PNG)."""
    # No matplotlib.use("Agg"): it would switch a notebook's inline backend off for the
    # whole session; a headless machine falls back to Agg by itself.
    import matplotlib.pyplot as plt

    from evals.report import read_metrics

    by_stage = {r["stage"]: r for r in rows}
    fig, ax = plt.subplots(2, 2, figsize=(11, 8))

    dpo = read_metrics(Path(by_stage["dpo"]["run"]))
    a = ax[0, 0]
    a.plot(*_series(dpo, "margin"), alpha=0.4, label="train margin")
    a.plot(*_series(dpo, "val_margin"), "o-", label="held-out margin")
    a.set_xlabel("DPO step"), a.set_ylabel("implicit reward margin")
    b = a.twinx()
    b.plot(*_series(dpo, "val_accuracy"), "s--", color="C2", label="held-out preference acc")
    b.set_ylim(0, 1), b.set_ylabel("preference accuracy")
    a.legend(loc="upper left", fontsize=8), b.legend(loc="lower right", fontsize=8)
    a.set_title("DPO on on-policy pairs")

    rl = read_metrics(Path(by_stage["rl"]["run"]))
    a = ax[0, 1]
    a.plot(*_series(rl, "reward"), alpha=0.5, label="rollout mean reward")
    a.plot(*_series(rl, "pass1"), "o-", label="held-out greedy pass@1")
    a.set_xlabel("RL step"), a.set_ylabel("reward / accuracy"), a.set_ylim(0, 1)
    b = a.twinx()
    b.plot(*_series(rl, "kl"), color="C3", alpha=0.6, label="KL to SFT (per token)")
    b.set_ylabel("KL")
    a.legend(loc="upper left", fontsize=8), b.legend(loc="lower right", fontsize=8)
    a.set_title("RL against the grader")

    a = ax[1, 0]
    scored = [r for r in rows if r.get("eval")]
    acc = [r["eval"]["accuracy"] for r in scored]
    err = [[x - r["eval"]["ci95"][0] for x, r in zip(acc, scored)],
           [r["eval"]["ci95"][1] - x for x, r in zip(acc, scored)]]
    a.bar([r["stage"] for r in scored], acc, yerr=err, capsize=4, color="C0")
    a.set_ylim(0, 1), a.set_ylabel("held-out accuracy (greedy, 95% Wilson)")
    a.set_title("every stage on the same problems")

    a = ax[1, 1]
    for name, label in (("reward_model", "best-of-n by the reward model"),
                        ("majority", "majority of n"), ("oracle", "pass@n (grader)")):
        lo = [c[0] for c in curve[name]["ci95"]]
        hi = [c[1] for c in curve[name]["ci95"]]
        a.plot(curve["ns"], curve[name]["accuracy"], "o-", label=label)
        a.fill_between(curve["ns"], lo, hi, alpha=0.15)
    a.set_xscale("log", base=2), a.set_xlabel("samples per problem (SFT model, T=0.8)")
    a.set_ylim(0, 1), a.set_ylabel("accuracy"), a.legend(fontsize=8)
    a.set_title("best-of-n")

    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
