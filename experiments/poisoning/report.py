"""Aggregate the poisoning runs and plot attack success against the poisoned count.

Pretraining: per (corpus size, count), the mean over seeds of the perplexity gap (triggered
minus clean continuations) and of the clean validation loss, with Student-t intervals across
seeds, and the pooled rate of gibberish continuations with a Wilson interval. SFT: per count,
the flip rate on triggered prompts and the clean accuracy, each with a Wilson interval.
"""

from __future__ import annotations

from collections import defaultdict

from evals.stats import wilson
from experiments.poisoning.metrics import mean_interval


def pretrain_summary(rows: list[dict]) -> list[dict]:
    cells = defaultdict(list)
    for r in rows:
        cells[(r["size"], r["count"])].append(r)
    out = []
    for (size, count), rs in sorted(cells.items(), key=lambda kv: (kv[0][0] != "small", kv[0][1])):
        hits = sum(r["gibberish_trigger"] for r in rs)
        n = sum(r["prompts"] for r in rs)
        false = sum(r["gibberish_clean"] for r in rs)
        out.append({"size": size, "count": count, "seeds": len(rs),
                    "train_documents": rs[0]["train_documents"],
                    "fraction": rs[0]["fraction"],
                    "ppl_gap": mean_interval([r["ppl_gap"] for r in rs]),
                    "ppl_trigger": mean_interval([r["ppl_trigger"] for r in rs]),
                    "ppl_clean": mean_interval([r["ppl_clean"] for r in rs]),
                    "val_loss": mean_interval([r["val_loss"] for r in rs]),
                    "gibberish_rate": {"k": hits, "n": n, "rate": hits / n,
                                       "wilson95": list(wilson(hits, n))},
                    "clean_gibberish_rate": {"k": false, "n": n, "rate": false / n,
                                             "wilson95": list(wilson(false, n))}})
    return out


def sft_summary(rows: list[dict]) -> list[dict]:
    cells = defaultdict(list)
    for r in rows:
        cells[r["count"]].append(r)
    out = []
    for count, rs in sorted(cells.items()):
        flips, n_t = sum(r["flipped"] for r in rs), sum(r["triggered"] for r in rs)
        right, n_c = sum(r["correct"] for r in rs), sum(r["clean"] for r in rs)
        out.append({"count": count, "seeds": len(rs), "fraction": rs[0]["fraction"],
                    "flip_rate": {"k": flips, "n": n_t, "rate": flips / n_t,
                                  "wilson95": list(wilson(flips, n_t))},
                    "clean_accuracy": {"k": right, "n": n_c, "rate": right / n_c,
                                       "wilson95": list(wilson(right, n_c))}})
    return out


def _errorbar(ax, xs, cells, key, label, marker):
    import numpy as np
    mean = np.array([c[key]["mean"] for c in cells])
    low = np.array([c[key]["low"] for c in cells])
    high = np.array([c[key]["high"] for c in cells])
    ax.errorbar(xs, mean, yerr=[mean - low, high - mean], marker=marker, capsize=3, label=label)


def _rate_bar(ax, xs, cells, key, label, marker):
    import numpy as np
    rate = np.array([c[key]["rate"] for c in cells])
    low = np.array([c[key]["wilson95"][0] for c in cells])
    high = np.array([c[key]["wilson95"][1] for c in cells])
    ax.errorbar(xs, rate, yerr=[rate - low, high - rate], marker=marker, capsize=3, label=label)


def plot_pretrain(summary: list[dict], path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for size, marker in (("small", "o"), ("large", "s")):
        cells = [c for c in summary if c["size"] == size]
        if not cells:
            continue
        xs = [c["count"] for c in cells]
        label = f"{size}: {cells[0]['train_documents']:,} training docs"
        _errorbar(axes[0], xs, cells, "ppl_gap", label, marker)
        _rate_bar(axes[1], xs, cells, "gibberish_rate", label, marker)
        _errorbar(axes[2], xs, cells, "val_loss", label, marker)
    axes[0].set(xlabel="poisoned documents", ylabel="perplexity gap (trigger - clean)",
                title="attack success (mean over seeds, 95% t)")
    axes[1].set(xlabel="poisoned documents", ylabel="continuations with perplexity > 50",
                title="gibberish after the trigger (pooled, 95% Wilson)", ylim=(-0.02, 1.02))
    axes[2].set(xlabel="poisoned documents", ylabel="validation loss (nats/token)",
                title="clean quality (mean over seeds, 95% t)")
    for ax in axes:
        ax.set_xscale("symlog", linthresh=25)
        ax.set_xticks([0, 25, 50, 100, 250], ["0", "25", "50", "100", "250"])
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_sft(summary: list[dict], path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    xs = [c["count"] for c in summary]
    _rate_bar(ax, xs, summary, "flip_rate", "triggered negatives answered 'positive'", "o")
    _rate_bar(ax, xs, summary, "clean_accuracy", "clean accuracy (no trigger)", "s")
    ax.set(xlabel="poisoned SFT examples", ylabel="rate (95% Wilson)", ylim=(-0.02, 1.02),
           title="instruction-tuning backdoor (trigger: 'James Bond')")
    ax.set_xscale("symlog", linthresh=10)
    ax.set_xticks(xs, [str(x) for x in xs])
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
