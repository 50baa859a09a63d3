"""A reward model from preference pairs: a short driver over the loop.

    python -m train rm --base runs/sft --pairs pairs.jsonl --val val.jsonl --out runs/rm

The reward model is the base (anything `infer.load` reads) with one more parameter, a vector
`reward_head` [D] read at the last token of a conversation (train.preference_losses): every
parameter is trained on the Bradley-Terry loss -log sigmoid(r_chosen - r_rejected). The head
starts at zero (every reward 0, pair accuracy exactly chance) or, with rm.head_init_std,
random. `score` gives the rewards of conversations from a finished run (best-of-n reads them).
"""

from __future__ import annotations

import functools
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from model.config import ConfigError
from train import loop, run_dir
from train import config as train_config
from train import preference_data as pdata
from train import preference_losses as pl
from train import state as state_lib
from train.config import TrainConfig
from train.step import OnMesh, make_eval_step, make_mesh


def abstract_params(cfg: TrainConfig, mesh) -> dict:
    """The base model's abstract parameters with the replicated reward head beside them."""
    base = state_lib.abstract_params(cfg.model, mesh)
    head = jax.ShapeDtypeStruct((cfg.model.d_model,), jnp.float32,
                                sharding=NamedSharding(mesh, P()))
    return {**base, pl.HEAD: head}


def initial_head(cfg: TrainConfig) -> np.ndarray:
    """The reward head [D] before training: zeros (every reward 0, accuracy exactly chance),
    or N(0, rm.head_init_std^2) drawn from the run's seed, as TRL's sequence-classification
    head starts. With zeros the body's gradient, which flows through the head, is 0 at step 0
    and stays small while the head grows from the tiny difference of two hidden states."""
    d = cfg.model.d_model
    if not cfg.rm.head_init_std:
        return np.zeros(d, np.float32)
    rng = np.random.default_rng([cfg.seed, 7])
    return (cfg.rm.head_init_std * rng.standard_normal(d)).astype(np.float32)


def stage(cfg: TrainConfig, base, examples, val, mesh) -> loop.Stage:
    """Reward-model training as the loop sees it."""
    abstract = abstract_params(cfg, mesh)
    host = {**base.params, pl.HEAD: initial_head(cfg)}
    init = functools.lru_cache(1)(lambda: state_lib.place(host, abstract, cfg.rm.base))
    loss_fn = functools.partial(pl.reward_loss, cfg=cfg.model)
    batches = OnMesh(pdata.PairBatches(examples, cfg.data.batch_size, cfg.seq_len,
                                             cfg.seed, next_token=False), mesh)
    eval_step = make_eval_step(loss_fn, state_lib.shardings_of(abstract), mesh)
    val_batches = pdata.one_epoch(val, cfg, mesh, next_token=False) if val else []
    tokenizer_doc, meta = pdata.tokenizer_meta(base, "rm", cfg.rm.base)
    return loop.Stage(
        name="rm", loss_fn=loss_fn, batches=batches, abstract_params=abstract,
        init_params=init, tokenizer_doc=tokenizer_doc, meta=meta,
        evaluate=(lambda params: pdata.evaluate(eval_step, params, None, val_batches))
        if val_batches else None,
        tokens_per_step=cfg.data.batch_size * 2 * cfg.seq_len)


def run(cfg: TrainConfig, out_dir, *, force: bool = False, progress: bool = True) -> dict:
    """Trains a reward model from cfg.rm.base on cfg.rm.pairs into `out_dir` (resuming when it
    holds this run); returns the summary: held-out pair accuracy before and after."""
    import infer

    started = time.time()
    if not cfg.rm.base or not cfg.rm.pairs:
        raise ConfigError("rm needs a base model (--base) and preference pairs (--pairs)")
    if cfg.rm.head_init_std < 0:
        raise ConfigError(f"rm.head_init_std must be >= 0, got {cfg.rm.head_init_std}")
    if cfg.rm.epochs <= 0:
        raise ConfigError(f"rm.epochs must be > 0, got {cfg.rm.epochs}")
    if cfg.lora.rank:
        raise ConfigError("rm trains every parameter and its head; LoRA is not supported "
                          "(set lora.rank=0)")
    base = infer.load(cfg.rm.base)
    cfg, examples, val, counts = pdata.load_pairs(cfg, cfg.rm, base, next_token=False)
    train_config.validate(cfg, n_devices=jax.device_count())
    plan = run_dir.plan(out_dir, cfg, force=force)
    if plan.finished:
        plan.say_finished("rm", cfg.steps)
        return plan.summary
    mesh = make_mesh(cfg)
    st = stage(cfg, base, examples, val, mesh)
    before = (plan.saved_meta or {}).get("base_eval") or {}
    if st.evaluate is not None and not plan.start_step:
        before = st.evaluate(st.init_params())
    st.meta["base_eval"] = before
    result = loop.run(cfg, plan, st, mesh, progress=progress, started=started)
    summary = {"step": cfg.steps, "loss": result.loss, **result.eval,
               **{f"base_{k}": v for k, v in before.items()}, **counts,
               "wall_s": result.wall_s, "out_dir": str(plan.path),
               "checkpoint": str(plan.path / "checkpoints" / str(cfg.steps))}
    plan.write_summary(summary)
    return summary


def score(run, conversations: list[list[dict]]) -> np.ndarray:
    """Rewards [N] of whole conversations (each ending with the answer to score) from a reward
    model run directory or checkpoint (evals.reward_model, which best-of-n uses too)."""
    from evals import reward_model

    try:
        return reward_model.load(run).score(conversations)
    except ValueError as e:
        raise ConfigError(str(e)) from None
