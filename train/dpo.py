"""Direct preference optimisation (Rafailov et al. 2023): a short driver over the loop.

    python -m train dpo --base runs/sft --pairs pairs.jsonl --val val.jsonl --out runs/dpo
    python -m train dpo --base runs/sft --pairs pairs.jsonl --out runs/dpo --set dpo.beta=0.3

The base (anything `infer.load` reads) is both the starting point and the reference. The
reference's log-probabilities of every answer are computed once before training and travel in
the batches (dpo.reference "precomputed", the default: one forward per step fewer), or come
from a frozen copy of the starting parameters ("frozen"). With lora.rank > 0 only adapters are
trained and the base itself is the frozen reference. The loss is train.preference_losses'
(beta, label smoothing, and RPO's NLL of the chosen answer with dpo.rpo_alpha); it logs the
implicit rewards, their margin and both accuracies.

The run is a run like SFT's: `infer.load` reads it (meta "base"), every `infer` command works
on it. Its summary holds the held-out preference accuracy before (the base) and after.
"""

from __future__ import annotations

import dataclasses
import functools
import time

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from model import lora
from model.config import ConfigError
from train import loop, run_dir
from train import config as train_config
from train import preference_data as pdata
from train import preference_losses as pl
from train import state as state_lib
from train.config import TrainConfig
from train.step import OnMesh, make_eval_step, make_mesh

REFERENCES = ("precomputed", "frozen")


def check(cfg: TrainConfig) -> None:
    """Refuses dpo settings that make no sense, before anything is loaded or written."""
    d = cfg.dpo
    if not d.base or not d.pairs:
        raise ConfigError("dpo needs a base model (--base) and preference pairs (--pairs)")
    if not d.beta > 0:
        raise ConfigError(f"dpo.beta must be > 0, got {d.beta}")
    if not 0 <= d.label_smoothing < 0.5:
        raise ConfigError(f"dpo.label_smoothing must be in [0, 0.5), got {d.label_smoothing}")
    if d.rpo_alpha < 0:
        raise ConfigError(f"dpo.rpo_alpha must be >= 0 (0: plain DPO), got {d.rpo_alpha}")
    if d.reference not in REFERENCES:
        raise ConfigError(f"dpo.reference must be one of {REFERENCES}, got {d.reference!r}")
    if d.epochs <= 0:
        raise ConfigError(f"dpo.epochs must be > 0, got {d.epochs}")


def reference_logps(cfg: TrainConfig, params, examples, mesh, shardings) -> np.ndarray:
    """The reference's summed log-probabilities [N, 2] of every pair's answers, in file order."""
    logps = jax.jit(functools.partial(pl.pair_logps, cfg=cfg.model),
                    in_shardings=(shardings, None))
    batches = pdata.one_epoch(examples, cfg, mesh, next_token=True)
    out = np.concatenate([np.asarray(logps(params, b)) for b in batches])
    return out[:len(examples)]


def _losses(cfg: TrainConfig):
    """The loss over full parameters, or over LoRA adapters whose frozen input is the base
    (which is then also the reference, being the starting point)."""
    dpo = functools.partial(pl.dpo_loss, cfg=cfg.model, beta=cfg.dpo.beta,
                            label_smoothing=cfg.dpo.label_smoothing,
                            rpo_alpha=cfg.dpo.rpo_alpha)
    frozen_ref = cfg.dpo.reference == "frozen"
    if not cfg.lora.rank:
        return dpo
    alpha = cfg.lora.alpha

    def lora_dpo(adapters, batch, base):  # the base is LoRA's frozen input and the reference
        return dpo(lora.merge(base, adapters, alpha), batch, base if frozen_ref else None)
    return lora_dpo


def stage(cfg: TrainConfig, base, examples, val, mesh) -> loop.Stage:
    """DPO as the loop sees it."""
    base_abstract = state_lib.abstract_params(cfg.model, mesh)
    place_base = lambda: state_lib.place(base.params, base_abstract, cfg.dpo.base)  # noqa: E731
    base_params = functools.lru_cache(1)(place_base)
    ref_logps = val_ref = None
    if cfg.dpo.reference == "precomputed":
        shardings = state_lib.shardings_of(base_abstract)
        ref_logps = reference_logps(cfg, base_params(), examples, mesh, shardings)
        val_ref = reference_logps(cfg, base_params(), val, mesh, shardings) if val else None
    batches = OnMesh(pdata.PairBatches(examples, cfg.data.batch_size, cfg.seq_len + 1,
                                             cfg.seed, next_token=True, ref_logps=ref_logps),
                           mesh)
    loss_fn = _losses(cfg)
    if cfg.lora.rank:
        targets = lora.check_targets(cfg.lora.targets.split(","))
        replicated = NamedSharding(mesh, P())
        make = lambda k: lora.init(cfg.model, cfg.lora.rank, targets, k)  # noqa: E731
        shapes = jax.eval_shape(make, jax.random.key(0))
        abstract = state_lib.with_shardings(shapes, jax.tree.map(lambda _: replicated, shapes))
        init = lambda: jax.jit(make, out_shardings=state_lib.shardings_of(abstract))(  # noqa
            jax.random.key(cfg.seed))
        frozen = base_params()
    else:
        abstract, init = base_abstract, base_params
        # A copy of its own: the trained parameters' buffers are donated at every step.
        frozen = place_base() if cfg.dpo.reference == "frozen" else None
    eval_step = make_eval_step(loss_fn, state_lib.shardings_of(abstract), mesh)
    val_batches = (pdata.one_epoch(val, cfg, mesh, next_token=True, ref_logps=val_ref)
                   if val else [])
    tokenizer_doc, meta = pdata.tokenizer_meta(base, "dpo", cfg.dpo.base)
    meta["lora"] = dataclasses.asdict(cfg.lora) if cfg.lora.rank else None
    return loop.Stage(
        name="dpo", loss_fn=loss_fn, batches=batches, abstract_params=abstract,
        init_params=init, frozen=frozen, tokenizer_doc=tokenizer_doc, meta=meta,
        evaluate=(lambda params: pdata.evaluate(eval_step, params, frozen, val_batches))
        if val_batches else None,
        tokens_per_step=cfg.data.batch_size * 2 * cfg.seq_len)


def run(cfg: TrainConfig, out_dir, *, force: bool = False, progress: bool = True) -> dict:
    """DPO of cfg.dpo.base on cfg.dpo.pairs into `out_dir` (resuming when it holds this run);
    returns the summary: held-out preference accuracies before and after, wall time."""
    import infer

    started = time.time()
    check(cfg)
    base = infer.load(cfg.dpo.base)
    cfg, examples, val, counts = pdata.load_pairs(cfg, cfg.dpo, base, next_token=True)
    train_config.validate(cfg, n_devices=jax.device_count())
    plan = run_dir.plan(out_dir, cfg, force=force)
    if plan.finished:
        plan.say_finished("dpo", cfg.steps)
        return plan.summary
    mesh = make_mesh(cfg)
    st = stage(cfg, base, examples, val, mesh)
    if progress:
        print(f"twofiles dpo: {len(examples)} pairs in rows of {cfg.seq_len}, beta "
              f"{cfg.dpo.beta}, label smoothing {cfg.dpo.label_smoothing}, rpo alpha "
              f"{cfg.dpo.rpo_alpha}, reference {cfg.dpo.reference}", flush=True)
    before = (plan.saved_meta or {}).get("base_eval") or {}
    if st.evaluate is not None and not plan.start_step:
        before = st.evaluate(st.init_params())
    st.meta["base_eval"] = before  # kept in every checkpoint for a resumed run's summary
    result = loop.run(cfg, plan, st, mesh, progress=progress, started=started)
    before = {f"base_{k}": v for k, v in before.items()}
    summary = {"step": cfg.steps, "loss": result.loss, **result.eval, **before, **counts,
               "wall_s": result.wall_s, "out_dir": str(plan.path),
               "checkpoint": str(plan.path / "checkpoints" / str(cfg.steps))}
    plan.write_summary(summary)
    return summary
