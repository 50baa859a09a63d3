"""A picture of an arena's ratings: each model's rating with its 95% interval, and the
win-rate matrix (the row model's share of wins against the column model, ties half)."""

from __future__ import annotations

import numpy as np

from evals.ratings import Ratings


def plot(table: Ratings, path) -> None:
    """Writes a PNG (or any format matplotlib infers from the suffix) of `table` to `path`."""
    # No matplotlib.use("Agg"): it would switch a notebook's inline backend off for the
    # whole session; a headless machine falls back to Agg by itself.
    import matplotlib.pyplot as plt

    n = len(table.models)
    fig, (left, right) = plt.subplots(1, 2, figsize=(6 + 1.1 * n, 0.6 * n + 3),
                                      gridspec_kw={"width_ratios": [1, 1.3]})
    y = np.arange(n)[::-1]
    rating = np.array(table.rating)
    lo, hi = np.array(table.ci95).T
    left.errorbar(rating, y, xerr=[rating - lo, hi - rating], fmt="o", capsize=4)
    left.set_yticks(y, table.models)
    left.set_xlabel("Bradley–Terry rating (Elo scale), 95% interval")
    left.grid(axis="x", alpha=0.3)

    shown = np.ma.masked_invalid(table.win_rate)
    image = right.imshow(shown, cmap="RdYlGn", vmin=0, vmax=1)
    right.set_xticks(range(n), table.models, rotation=30, ha="right")
    right.set_yticks(range(n), table.models)
    right.set_xlabel("against")
    right.set_title("win rate of the row model (ties half)")
    for i in range(n):
        for j in range(n):
            if not np.isnan(table.win_rate[i, j]):
                right.text(j, i, f"{table.win_rate[i, j]:.2f}", ha="center", va="center")
    fig.colorbar(image, ax=right, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
