"""All three fits of one set of runs, their JSON, their plot, and the text a person reads."""
from __future__ import annotations

import dataclasses

import numpy as np

from scaling import bootstrap, isoflop, kaplan, parametric
from scaling.law import NAMES, Law, derived, numerical_optimal_n
from scaling.records import RunRecord, arrays, compute_of


@dataclasses.dataclass
class Analysis:
    runs: list
    budget: float
    fit: parametric.ParametricFit
    iso: dict
    kaplan: dict | None

    def to_json(self) -> dict:
        out = self.fit.to_json(self.budget)
        if self.fit.samples is not None:  # kept so `plan` can give intervals at any budget
            out["samples"] = self.fit.samples.tolist()
        out["isoflop"] = {k: v for k, v in self.iso.items() if k != "profiles"}
        out["isoflop"]["profiles"] = [
            {"compute": p.compute, "N_opt": p.n_opt, "D_opt": p.d_opt, "loss_opt": p.loss_opt,
             "runs": p.n_runs, "interior": p.interior} for p in self.iso["profiles"]]
        if self.kaplan is not None:
            out["kaplan"] = {k: v for k, v in self.kaplan.items() if k != "law"}
        return out

    def figure(self):
        from scaling import plots
        n, d, loss = arrays(self.runs)
        compute = np.array([compute_of(r) for r in self.runs])
        return plots.fit_figure(n, d, loss, compute, [r.budget for r in self.runs],
                                self.fit.law, self.iso)

    def plot(self, path: str) -> None:
        import matplotlib.pyplot as plt
        fig = self.figure()
        fig.savefig(path, dpi=110)
        plt.close(fig)


def fit_all(runs: list[RunRecord], *, budget: float | None = None, bootstrap_replicas: int = 0,
            seed: int = 0, grid: str | dict = "chinchilla", with_kaplan: bool = True,
            drop_highest: int = 0) -> Analysis:
    """Approach 3 (with bootstrap), approach 2 and Kaplan's form on the same runs."""
    if drop_highest:
        keep = np.argsort([r.loss for r in runs])[:len(runs) - drop_highest]
        runs = [runs[i] for i in sorted(keep)]
    n, d, loss = arrays(runs)
    if budget is None:
        budget = float(np.max(6.0 * n * d))
    grid = {"chinchilla": parametric.CHINCHILLA_GRID,
            "coarse": parametric.COARSE_GRID}.get(grid, grid) if isinstance(grid, str) else grid
    fit = parametric.fit(n, d, loss, grid=grid, bootstrap_replicas=bootstrap_replicas, seed=seed)
    compute = np.array([compute_of(r) for r in runs])
    iso = isoflop.fit(n, d, loss, compute, [r.budget for r in runs],
                      bootstrap_replicas=bootstrap_replicas, seed=seed)
    kap = (kaplan.fit(n, d, loss, bootstrap_replicas=min(bootstrap_replicas, 100), seed=seed)
           if with_kaplan else None)
    return Analysis(runs=runs, budget=budget, fit=fit, iso=iso, kaplan=kap)


def _ci(ci, k):
    return f"  [{ci[k][0]:.4g}, {ci[k][1]:.4g}]" if ci and k in ci else ""


def summary_text(out: dict) -> str:
    ci = out.get("ci")
    lines = [f"L(N, D) = E + A/N^alpha + B/D^beta   ({out['n_points']} runs, Huber objective "
             f"{out['objective']:.6g}, {'converged' if out['converged'] else 'NOT converged'})"]
    for k in NAMES:
        lines.append(f"  {k:6s} {out[k]:.4g}{_ci(ci, k)}")
    if "a" in out:
        lines.append(f"compute-optimal at C = {out['budget']:.3g} FLOPs (6ND):")
        for k in ("a", "b", "N_opt", "D_opt", "tokens_per_param", "loss_opt"):
            lines.append(f"  {k:17s} {out[k]:.4g}{_ci(ci, k)}")
    iso = out.get("isoflop", {})
    if "a" in iso:
        used = sum(p["interior"] for p in iso["profiles"])
        lines.append(f"IsoFLOP (approach 2, {used} budgets with an interior minimum): "
                     f"a = {iso['a']:.3f}"
                     f"{_ci(iso.get('ci'), 'a')}, b = {iso['b']:.3f}{_ci(iso.get('ci'), 'b')}")
    kap = out.get("kaplan")
    if kap:
        lines.append(f"Kaplan form: alpha_N = {kap['alpha_N']:.3f}, alpha_D = {kap['alpha_D']:.3f}, "
                     f"a = {kap['a']:.3f}, objective {kap['objective']:.6g} (vs {out['objective']:.6g})")
    for w in out.get("warnings", []) + iso.get("warnings", []):
        lines.append(f"warning: {w}")
    return "\n".join(lines)


def plan(fit_json: dict, compute: float, target_loss: float | None = None) -> dict:
    """Closed-form compute-optimal allocation at `compute`, its numerical check, the loss
    predicted, the compute for `target_loss`, and bootstrap intervals when the fit kept samples."""
    law = Law.from_dict(fit_json)
    out = {"compute": compute, **derived(law, compute)}
    n_num = numerical_optimal_n(law, compute)
    out["N_opt_numerical"] = n_num
    out["closed_form_rel_error"] = abs(n_num - out["N_opt"]) / out["N_opt"]
    if target_loss is not None:
        out["target_loss"] = target_loss
        out["compute_for_target"] = float(law.compute_for_loss(target_loss))
    samples = fit_json.get("samples")
    if samples:
        table: dict = {}
        for s in samples:
            sl = Law(*s)
            row = parametric._derived_or_nan(sl, compute)
            if target_loss is not None:
                row["compute_for_target"] = (float(sl.compute_for_loss(target_loss))
                                             if target_loss > sl.E and sl.alpha > 0 and sl.beta > 0
                                             else float("nan"))
            for k, v in row.items():
                table.setdefault(k, []).append(v)
        out["ci"] = bootstrap.intervals(table)
    return out


def plan_text(fit_json: dict, compute: float, target_loss: float | None = None) -> str:
    p = plan(fit_json, compute, target_loss)
    ci = p.get("ci")
    lines = [f"budget C = {compute:.4g} FLOPs (C = 6ND)"]
    rows = [("N_opt", "parameters"), ("D_opt", "tokens"), ("tokens_per_param", "tokens/param"),
            ("loss_opt", "predicted loss")]
    if target_loss is not None:
        rows.append(("compute_for_target", f"FLOPs to reach loss {target_loss}"))
    for k, label in rows:
        lines.append(f"  {label:28s} {p[k]:.4g}{_ci(ci, k)}")
    lines.append(f"  numerical check: argmin_N L(N, C/6N) = {p['N_opt_numerical']:.6g} "
                 f"(closed form off by {p['closed_form_rel_error']:.1e})")
    return "\n".join(lines)


def holdout(runs: list[RunRecord], *, bootstrap_replicas: int = 200, seed: int = 0,
            grid: str | dict = "chinchilla") -> dict:
    """Fit approach 3 without the largest budget, then predict that budget's runs: the check
    that the law extrapolates, with a 95% interval per prediction from the bootstrap."""
    budgets = sorted({r.budget for r in runs if r.budget is not None})
    if len(budgets) < 3:
        raise ValueError(f"a hold-out check needs runs of >= 3 budgets (2 to fit, 1 to predict); "
                         f"got budgets {budgets}")
    seen = [r for r in runs if r.budget is not None and r.budget < budgets[-1]]
    held = [r for r in runs if r.budget == budgets[-1]]
    small = fit_all(seen, bootstrap_replicas=bootstrap_replicas, seed=seed, grid=grid,
                    with_kaplan=False)
    law = small.fit.law
    rows = []
    for r in held:
        pred = float(law.loss(r.params, r.tokens))
        row = {"name": r.name, "params": r.params, "tokens": r.tokens, "measured": r.loss,
               "predicted": pred, "rel_error": pred / r.loss - 1}
        if small.fit.samples is not None:
            with np.errstate(all="ignore"):
                draws = [float(Law(*s).loss(r.params, r.tokens)) for s in small.fit.samples]
            row["ci"] = list(bootstrap.percentile_interval(draws))
        rows.append(row)
    return {"fit_budgets": budgets[:-1], "held_out_budget": budgets[-1],
            "fit": small.fit.to_json(budgets[-1]), "predictions": rows,
            "mean_abs_rel_error": float(np.mean([abs(r["rel_error"]) for r in rows]))}


def holdout_text(h: dict) -> str:
    lines = [f"fitted on budgets {', '.join(f'{b:.3g}' for b in h['fit_budgets'])}; "
             f"predicting the {len(h['predictions'])} runs at {h['held_out_budget']:.3g} FLOPs"]
    for r in h["predictions"]:
        ci = f" [{r['ci'][0]:.4f}, {r['ci'][1]:.4f}]" if "ci" in r else ""
        lines.append(f"  N={r['params']:>11,.0f}  D={r['tokens']:>13,.0f}: measured "
                     f"{r['measured']:.4f}, predicted {r['predicted']:.4f}{ci} "
                     f"({r['rel_error']:+.2%})")
    lines.append(f"mean absolute relative error {h['mean_abs_rel_error']:.2%}")
    return "\n".join(lines)
