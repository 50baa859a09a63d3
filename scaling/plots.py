"""Plots of a fit (matplotlib): IsoFLOP curves with their minima, the compute-optimal frontier
with the data, and the residuals of the parametric law."""
from __future__ import annotations

import numpy as np

from scaling import isoflop
from scaling.law import FLOPS_PER_PARAM_TOKEN, Law


def isoflop_curves(ax, n, d, loss, compute, labels, law: Law | None = None, iso: dict | None = None):
    """Loss against N per budget; the parabola and its minimum (approach 2); the law's
    prediction along the same budget, L(N, C/6N), and its closed-form minimum (approach 3)."""
    cmap = _cmap(len(np.unique(labels)))
    profiles = {round(np.log10(p.compute), 6): p for p in (iso or {}).get("profiles", [])}
    for j, g in enumerate(np.unique(labels)):
        m = labels == g
        c = float(np.exp(np.mean(np.log(compute[m]))))
        color = cmap(j)
        ax.scatter(n[m], loss[m], color=color, s=18, label=f"C = {c:.2g}")
        grid = np.geomspace(n[m].min() / 1.5, n[m].max() * 1.5, 100)
        p = profiles.get(round(np.log10(c), 6))
        if p is not None:
            ax.plot(grid, np.polyval(p.coef_n, np.log10(grid)), color=color, lw=1)
            ax.plot([p.n_opt], [p.loss_opt], marker="v", color=color, ms=8, mec="k")
        if law is not None:
            c6 = float(np.exp(np.mean(np.log(FLOPS_PER_PARAM_TOKEN * n[m] * d[m]))))
            ax.plot(grid, law.loss(grid, c6 / (FLOPS_PER_PARAM_TOKEN * grid)), color=color,
                    ls="--", lw=1)
            if law.alpha > 0 and law.beta > 0:
                n_opt = law.optimal_n(c6)
                ax.plot([n_opt], [law.optimal_loss(c6)], marker="*", color=color, ms=10, mec="k")
    ax.set(xscale="log", xlabel="parameters N", ylabel="final validation loss",
           title="IsoFLOP profiles (v parabola min, * law min, -- law)")
    ax.legend(fontsize=7)


def frontier(ax, n, d, loss, compute, law: Law | None = None, iso: dict | None = None):
    """Runs in (C, N) coloured by loss; approach 2's minima; approach 3's N_opt(C)."""
    sc = ax.scatter(compute, n, c=loss, cmap="viridis", s=16)
    ax.figure.colorbar(sc, ax=ax, label="loss")
    cs = np.geomspace(compute.min() / 2, compute.max() * 10, 100)
    if iso and iso.get("profiles"):
        for interior, style in ((True, dict(color="red", label="IsoFLOP minima")),
                                (False, dict(color="none", label="minima outside the sizes run"))):
            ps = [p for p in iso["profiles"] if p.interior == interior]
            if ps:
                ax.scatter([p.compute for p in ps], [p.n_opt for p in ps], marker="v", s=60,
                           edgecolor="red", zorder=3, **style)
        if "a" in iso:
            ax.plot(cs, iso["k_N"] * cs ** iso["a"], color="red", lw=1,
                    label=f"approach 2: N_opt ~ C^{iso['a']:.3f}")
    if law is not None and law.alpha > 0 and law.beta > 0:
        ax.plot(cs, law.optimal_n(cs), color="k", ls="--",
                label=f"approach 3 (6ND): N_opt ~ C^{law.a:.3f}")
    ax.set(xscale="log", yscale="log", xlabel="training compute C (FLOPs)",
           ylabel="parameters N", title="Compute-optimal frontier")
    ax.legend(fontsize=7)


def residual_plot(ax, n, d, loss, law: Law):
    """log(observed) - log(predicted) against predicted loss, coloured by log N."""
    pred = law.loss(n, d)
    sc = ax.scatter(pred, np.log(loss) - np.log(pred), c=np.log10(n), cmap="plasma", s=16)
    ax.figure.colorbar(sc, ax=ax, label="log10 N")
    ax.axhline(0, color="k", lw=0.8)
    ax.set(xlabel="predicted loss", ylabel="log residual (observed / predicted)",
           title="Residuals of L(N, D)")


def fit_figure(n, d, loss, compute, budget=None, law: Law | None = None, iso: dict | None = None):
    """The three panels side by side; returns the matplotlib Figure."""
    import matplotlib.pyplot as plt  # headless machines fall back to the Agg backend
    n, d, loss, compute = (np.asarray(v, np.float64) for v in (n, d, loss, compute))
    labels = isoflop.group_budgets(compute, budget)
    fig, axes = plt.subplots(1, 3, figsize=(18, 5), constrained_layout=True)
    isoflop_curves(axes[0], n, d, loss, compute, labels, law, iso)
    frontier(axes[1], n, d, loss, compute, law, iso)
    if law is not None:
        residual_plot(axes[2], n, d, loss, law)
    return fig


def _cmap(k):
    import matplotlib
    base = matplotlib.colormaps["tab10" if k <= 10 else "viridis"]
    return base if k <= 10 else (lambda j: base(j / max(k - 1, 1)))
