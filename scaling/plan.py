"""Planning a sweep: model shapes from a preset's family laid out across IsoFLOP budgets.

A family keeps what a preset fixes (vocabulary, head size, grouped-query ratio, MLP ratio,
context) and varies width and depth. Parameters and FLOPs come from `model.count_params` and
`model.flops_per_token`, the numbers the training loop reports, so a planned budget is the
compute the run will actually spend (exact FLOPs, attention included; not 6ND).
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np

import model


SHAPE_FIELDS = ("d_model", "n_layers", "n_heads", "n_kv_heads", "d_ff")


@dataclasses.dataclass(frozen=True)
class PlannedRun:
    name: str
    budget: float              # the IsoFLOP budget (FLOPs) this run belongs to
    d_model: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    d_ff: int
    params: int
    non_embedding_params: int
    flops_per_token: int       # exact, training (3x forward), at the sweep's sequence length
    steps: int
    tokens: int                # steps * batch * seq_len
    flops: float               # flops_per_token * tokens (within rounding of `budget`)
    lr: float | None = None    # peak LR; None keeps the base config's

    @property
    def overrides(self) -> tuple:
        """The `--set` strings that turn the base training config into this run."""
        shape = tuple(f"model.{k}={getattr(self, k)}" for k in SHAPE_FIELDS)
        lr = () if self.lr is None else (f"optim.lr={self.lr:.6g}",)
        return shape + (f"steps={self.steps}",) + lr

    def to_dict(self) -> dict:
        return dict(dataclasses.asdict(self), overrides=list(self.overrides))


def family(base: model.ModelConfig, *, widths=None, depths=range(1, 9),
           min_aspect: float = 8.0, max_aspect: float = 256.0) -> list[model.ModelConfig]:
    """Shapes of `base`'s family, smallest first: d_model a multiple of the head size, n_layers in
    `depths`, width/depth kept within [min_aspect, max_aspect] so no shape is absurdly thin."""
    k = base.head_dim
    group = base.n_heads // base.n_kv_heads  # query heads per kv head, as in the preset
    ff_ratio = base.d_ff / base.d_model
    heads = [d // k for d in widths if d % k == 0] if widths else range(1, 33)
    out = {}
    for h in heads:
        if h % group:
            continue
        d = k * h
        d_ff = max(8, int(round(ff_ratio * d / 8)) * 8)
        for layers in depths:
            if not min_aspect <= d / layers <= max_aspect:
                continue
            cfg = dataclasses.replace(base, d_model=d, n_layers=layers, n_heads=h,
                                      n_kv_heads=h // group, d_ff=d_ff)
            out.setdefault(model.count_params(cfg)["params"], cfg)
    return [out[n] for n in sorted(out)]


def plan(base: model.ModelConfig, budgets, *, batch_size: int, seq_len: int,
         runs_per_budget: int = 4, tokens_per_param: float = 20.0, spread: float = 8.0,
         min_steps: int = 20, shapes=None) -> list[PlannedRun]:
    """For each budget, `runs_per_budget` shapes whose N is log-spaced over a factor `spread`
    around the guess N* = sqrt(C / (6 * tokens_per_param)) (Chinchilla's 20 by default, or the
    ratio a previous fit predicts), each trained for the steps that spend the budget."""
    shapes = shapes or family(base)
    tokens_per_step = batch_size * seq_len
    runs = []
    for c in sorted(float(b) for b in budgets):
        if not c > 0:
            raise ValueError(f"budgets must be positive FLOPs, got {c}")
        guess = math.sqrt(c / (6.0 * tokens_per_param))
        targets = np.geomspace(guess / math.sqrt(spread), guess * math.sqrt(spread),
                               runs_per_budget)
        feasible = []
        for cfg in shapes:
            fpt = model.flops_per_token(cfg, seq_len=seq_len, training=True)
            steps = int(round(c / (fpt * tokens_per_step)))
            if steps >= min_steps:
                feasible.append((cfg, fpt, steps))
        if len(feasible) < runs_per_budget:
            raise ValueError(
                f"budget {c:.3g} FLOPs affords only {len(feasible)} shape(s) with >= {min_steps} "
                f"steps of {tokens_per_step} tokens; raise the budget or lower min_steps")
        chosen = _nearest_distinct([model.count_params(f[0])["params"] for f in feasible], targets)
        for i in chosen:
            cfg, fpt, steps = feasible[i]
            counts = model.count_params(cfg)
            tokens = steps * tokens_per_step
            runs.append(PlannedRun(
                name=f"C{c:.2e}_N{counts['params']}".replace("+", ""), budget=c,
                **{k: getattr(cfg, k) for k in SHAPE_FIELDS}, params=counts["params"],
                non_embedding_params=counts["non_embedding_params"], flops_per_token=fpt,
                steps=steps, tokens=tokens, flops=float(fpt) * tokens))
    return runs


def _nearest_distinct(sizes, targets) -> list[int]:
    """Indices of distinct sizes nearest (in log) to each target, in order of target."""
    log_sizes = np.log(np.asarray(sizes, float))
    taken: list[int] = []
    for t in np.log(targets):
        order = np.argsort(np.abs(log_sizes - t))
        taken.append(next(int(i) for i in order if int(i) not in taken))
    return sorted(taken, key=lambda i: sizes[i])
