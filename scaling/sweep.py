"""Run a planned IsoFLOP sweep through the one training loop, resumably.

    records = run_sweep("runs/sweep", budgets=[1e12, 3e12, 1e13], config="tiny")

Layout of OUT:  plan.json (the runs, fixed at the first call), runs/<name>/ (each a normal
pretraining run directory), records.csv and records.json (one row per finished run, rewritten
atomically as each run ends), sweep.json (timings). A rerun skips runs whose summary.json says
they finished and resumes an interrupted one from its latest checkpoint (the loop's own resume).
"""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

from scaling import records as rec
from scaling.plan import PlannedRun, family, plan

# What a sweep changes in the base training config: evaluate once, at the end, on more batches
# (every run is scored on the same fixed validation batches, so their losses compare).
SWEEP_OVERRIDES = ("eval_every=0", "data.eval_batches=16")


class SweepError(ValueError):
    pass


def make_plan(config: str, budgets, *, overrides=(), runs_per_budget: int = 4,
              tokens_per_param: float = 20.0, spread: float = 8.0, min_steps: int = 20,
              lr_width: int | None = None, aspect=(8.0, 256.0)):
    """(base TrainConfig, planned runs) for a named training config and IsoFLOP budgets.
    Shapes keep d_model / n_layers within `aspect`; with `lr_width`, runs wider than that
    d_model get the peak LR base_lr * lr_width / d_model."""
    from train import config as train_config  # imported here: `scaling fit` needs no trainer
    base = train_config.apply_overrides(train_config.load(config),
                                        list(SWEEP_OVERRIDES) + list(overrides))
    runs = plan(base.model, budgets, batch_size=base.data.batch_size, seq_len=base.seq_len,
                runs_per_budget=runs_per_budget, tokens_per_param=tokens_per_param,
                spread=spread, min_steps=min_steps,
                shapes=family(base.model, min_aspect=aspect[0], max_aspect=aspect[1]))
    if lr_width:
        # In the plan, not only the run's config: plan.json shows it, a changed rule is refused.
        runs = [dataclasses.replace(r, lr=width_lr(base.optim.lr, r.d_model, lr_width))
                for r in runs]
    return base, runs


def width_lr(lr: float, d_model: int, lr_width: int) -> float:
    """Peak LR of a d_model-wide run: Adam's update to a hidden matrix grows with its width, so
    wider models need a proportionally smaller LR (the 1/width rule of muP); narrower ones keep
    the base LR, which is already the largest that trains stably."""
    return lr * min(1.0, lr_width / d_model)


def run_config(base, run: PlannedRun):
    """The TrainConfig of one planned run: its shape and steps, a warmup that fits, checkpoints
    a few times per run so an interruption loses little."""
    from train import config as train_config
    warm = base.optim.warmup_steps if base.optim.warmup_steps < run.steps // 2 else run.steps // 10
    extra = [f"optim.warmup_steps={warm}", f"checkpoint_every={max(1, run.steps // 3)}"]
    return train_config.apply_overrides(base, list(run.overrides) + extra)


def _finished(run_dir: Path, steps: int) -> dict | None:
    p = run_dir / "summary.json"
    if not p.is_file():
        return None
    summary = json.loads(p.read_text())
    return summary if summary.get("step") == steps else None


def _record(run: PlannedRun, summary: dict, cfg) -> rec.RunRecord:
    if summary["params"] != run.params or abs(summary["flops"] - run.flops) > 1e-6 * run.flops:
        raise SweepError(f"run {run.name}: the loop reports N={summary['params']}, "
                         f"C={summary['flops']:.4g} but the plan expected N={run.params}, "
                         f"C={run.flops:.4g}; model/ and train/ disagree on what they count")
    return rec.RunRecord(params=summary["params"], tokens=summary["tokens"],
                         loss=summary["val_loss"], flops=summary["flops"],
                         non_embedding_params=summary["non_embedding_params"], budget=run.budget,
                         name=run.name, wall_s=summary.get("wall_s"), config=cfg.to_dict())


def _check_plan(path: Path, runs: list[PlannedRun]) -> None:
    """A sweep directory belongs to one plan: refuse to mix runs of two different plans."""
    new = [r.to_dict() for r in runs]
    if path.is_file():
        # A run is its name and its config changes; comparing those alone keeps sweeps planned
        # before PlannedRun grew fields resumable.
        old = json.loads(path.read_text())["runs"]
        if _identities(old) != _identities(new):
            raise SweepError(f"{path} holds a different plan (other budgets, config or options); "
                             "use a new --out directory or delete that one")
    else:
        rec.write_json(str(path), {"runs": new})


def _check_out(out: Path) -> None:
    """A sweep writes records.csv, records.json and more into --out: only a new or empty
    directory, or one an earlier call of the same sweep wrote (it holds plan.json)."""
    if out.exists() and not out.is_dir():
        raise SweepError(f"--out {out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not (out / "plan.json").is_file():
        raise SweepError(f"--out {out} holds files but no plan.json, so it is not a sweep "
                         "directory and its files could be overwritten; use a new or empty "
                         "--out directory")


def _identities(runs: list[dict]) -> list[tuple]:
    return [(r["name"], r["overrides"]) for r in runs]


def run_sweep(out_dir, budgets, *, config: str = "tiny", overrides=(), runs_per_budget: int = 4,
              tokens_per_param: float = 20.0, spread: float = 8.0, min_steps: int = 20,
              lr_width: int | None = None, aspect=(8.0, 256.0), dry_run: bool = False,
              progress: bool = True, log=print) -> list[rec.RunRecord]:
    """Plan, then train every run not yet finished; returns the records of finished runs."""
    out = Path(out_dir)
    base, runs = make_plan(config, budgets, overrides=overrides, runs_per_budget=runs_per_budget,
                           tokens_per_param=tokens_per_param, spread=spread, min_steps=min_steps,
                           lr_width=lr_width, aspect=aspect)
    for r in runs:
        lr = base.optim.lr if r.lr is None else r.lr
        log(f"  {r.name:28s} N={r.params:>9,d}  d_model={r.d_model:>4d}  steps={r.steps:>5d}  "
            f"D={r.tokens:>10,d}  C={r.flops:.3g}  lr={lr:.3g}")
    if dry_run:
        return []
    _check_out(out)
    out.mkdir(parents=True, exist_ok=True)
    _check_plan(out / "plan.json", runs)
    done, t0 = [], time.time()
    timings = _read_timings(out)
    for i, r in enumerate(runs):
        cfg = run_config(base, r)
        run_dir = out / "runs" / r.name
        summary, seconds = train_unless_finished(cfg, run_dir, r.name, f"[{i + 1}/{len(runs)}]",
                                                 progress=progress, log=log)
        if seconds is not None:
            timings[r.name] = seconds
        done.append(_record(r, summary, cfg))
        rec.write_csv(str(out / "records.csv"), done)
        rec.write_json(str(out / "records.json"), done)
        rec.write_json(str(out / "sweep.json"), {"run_wall_s": timings,
                                                 "total_wall_s": sum(timings.values()),
                                                 "last_call_wall_s": time.time() - t0})
    return done


def train_unless_finished(cfg, run_dir: Path, name: str, label: str = "", *,
                          progress: bool = True, log=print) -> tuple[dict, float | None]:
    """(summary, seconds trained) of one pretraining run: skipped (seconds None) when its
    summary says it finished, else trained or resumed from its latest checkpoint. Every sweep
    (this one, the poisoning experiments) runs its runs through here."""
    from train import pretrain
    summary = _finished(Path(run_dir), cfg.steps)
    if summary is not None:
        log(f"{label} {name} already finished; skipped".lstrip())
        return summary, None
    log(f"{label} training {name}".lstrip())
    t = time.time()
    summary = pretrain.run(cfg, run_dir, progress=progress)
    return summary, time.time() - t


def _read_timings(out: Path) -> dict:
    p = out / "sweep.json"
    return json.loads(p.read_text()).get("run_wall_s", {}) if p.is_file() else {}

