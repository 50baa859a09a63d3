"""results.json and the plot from the work folder's stage outputs.

    results = gather(settings)      # the four cells, the gaps, data and training summaries
    plot(results, "tool_use.png")
"""

from __future__ import annotations

import json
from pathlib import Path

from experiments.tool_use import analysis

CELLS = (("tool", True), ("tool", False), ("head", True), ("head", False))
LABELS = {"tool": "fine-tuned with calculator calls", "head": "fine-tuned to answer in its head"}


def _scores(report: dict) -> list[float]:
    return [item["scores"][0] for item in report["items"]]


def _read(path: Path) -> dict:
    return json.loads(path.read_text())


def gather(s) -> dict:
    """Every number of the experiment, from the files the stages wrote under `s.out`."""
    reports = {(arm, on): _read(s.out / "eval" / f"{arm}_tools_{'on' if on else 'off'}.json")
               for arm, on in CELLS}
    cells = {}
    for (arm, on), r in reports.items():
        c = analysis.cell(sum(_scores(r)), r["n"])
        c["example"] = {"prompt": r["items"][0]["prompt"][-1]["content"],
                        "completion": r["items"][0]["completions"][0]}
        cells[f"{arm}_tools_{'on' if on else 'off'}"] = c
    best = reports[("tool", True)]
    gaps = {
        # The experiment's question: calculator model with its tool against the head model.
        "tool_model_with_tool_minus_head_model": analysis.gap(
            cells["tool_tools_on"], cells["head_tools_off"], _scores(best),
            _scores(reports[("head", False)])),
        # The same model without its tool: how much of the accuracy the tool itself carries.
        "tool_model_with_minus_without_tool": analysis.gap(
            cells["tool_tools_on"], cells["tool_tools_off"], _scores(best),
            _scores(reports[("tool", False)])),
    }
    train = {arm: {k: v for k, v in _read(s.out / f"sft_{arm}" / "summary.json").items()
                   if k in ("step", "loss", "val_loss", "base_val_loss", "train", "wall_s",
                            "peak_rss_gib", "trained_params")} for arm in ("tool", "head")}
    diag = s.out / "diagnostic.json"
    return {
        "task": f"{s.digits[0]}-digit {s.ops} {s.digits[1]}-digit, held-out problems of "
                "evals.tasks.arithmetic (greedy, one sample each)",
        "settings": {k: (list(v) if isinstance(v, tuple) else str(v) if isinstance(v, Path)
                         else v) for k, v in vars(s).items()},
        "base": {k: v for k, v in _read(s.out / "base" / "summary.json").items()
                 if k in ("step", "params", "val_bpb", "wall_s")},
        "data": _read(s.out / "data" / "data.json"),
        "train": train,
        "cells": cells,
        "gaps": gaps,
        "diagnostic": _read(diag) if diag.exists() else None,
        "copies": analysis.copies(best),
    }


def plot(results: dict, path: str | Path) -> None:
    """Accuracy of each (model, tool) cell with its 95% Wilson interval, as bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    x, colours = 0, {True: "#2a7ab9", False: "#b0b0b0"}
    ticks, names = [], []
    for arm in ("tool", "head"):
        for on in (True, False):
            c = results["cells"][f"{arm}_tools_{'on' if on else 'off'}"]
            lo, hi = c["ci95"]
            ax.bar(x, c["accuracy"], color=colours[on], width=0.8,
                   label=f"calculator {'on' if on else 'off'}" if arm == "tool" else None)
            ax.errorbar(x, c["accuracy"], yerr=[[c["accuracy"] - lo], [hi - c["accuracy"]]],
                        color="black", capsize=4)
            ax.text(x, hi + 0.02, f"{c['accuracy']:.1%}", ha="center", fontsize=9)
            x += 1
        ticks.append(x - 1.5)
        names.append(LABELS[arm])
        x += 0.6
    ax.set_xticks(ticks, names)
    ax.set_ylim(0, 1.12)
    ax.set_ylabel(f"held-out accuracy (n={results['cells']['tool_tools_on']['n']}, 95% Wilson)")
    ax.set_title(f"{results['task'].split(',')[0]}: same base, same tokens, same steps")
    ax.legend(loc="upper right")
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(path).with_name(f".{Path(path).name}.tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)
