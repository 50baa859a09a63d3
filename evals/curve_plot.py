"""A picture of a system-2 curve: accuracy against samples per problem, one line per way of
choosing the answer (majority vote, best-of-n by the grader, by a reward model), with 95%
intervals as error bars."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

LABELS = {"oracle": "best-of-n, grader as verifier (pass@n)",
          "reward_model": "best-of-n, reward model as verifier",
          "majority": "majority vote"}


def plot(report: dict, path, title: str | None = None) -> None:
    """Writes a PNG (or any format matplotlib infers from the suffix) of the curves in
    `report` (evals.curve.curves' shape) to `path`, atomically."""
    # No matplotlib.use("Agg"): it would switch a notebook's inline backend off for the
    # whole session; a headless machine falls back to Agg by itself.
    import matplotlib.pyplot as plt

    ns = np.asarray(report["ns"])
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for shift, name in zip((-0.03, 0.0, 0.03), LABELS):
        if name not in report:
            continue
        acc = np.asarray(report[name]["accuracy"])
        lo, hi = np.asarray(report[name]["ci95"]).T
        # Shifted a hair on the log axis so that overlapping error bars stay readable.
        ax.errorbar(ns * 2 ** shift, acc, yerr=[acc - lo, hi - acc], marker="o", capsize=3,
                    label=LABELS[name])
    ax.set_xscale("log", base=2)
    ax.set_xticks(ns, [str(n) for n in ns])
    ax.set_xlabel("samples per problem (n)")
    ax.set_ylabel(f"accuracy over {report['n']} problems (95% bootstrap)")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    out = Path(path)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.stem}.", suffix=out.suffix)
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=110, bbox_inches="tight")
        os.replace(tmp, out)
    except BaseException:
        os.unlink(tmp)
        raise
    finally:
        plt.close(fig)
