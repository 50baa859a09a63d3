"""Training checkpoints through Orbax's CheckpointManager, and `load_params` for inference.

OUT/checkpoints/<step>/ holds three items:
  state   params, optimizer state and step (sharded arrays, written by every process together)
  loader  the data iterator's state, so a resumed run sees exactly the batches it would have
  meta    step, RNG key, the resolved config and the tokenizer's file name and fingerprint
  tokenizer  the tokenizer file itself (it is JSON), so a checkpoint copied alone still decodes
Orbax writes each step under a temporary name and renames it when complete, so a run killed at
any moment leaves only whole checkpoints; the temporary leftovers are cleaned up on reopening.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp

import model

ITEMS = ("state", "loader", "meta", "tokenizer")


def manager(out_dir: str | os.PathLike, keep: int = 3, async_save: bool = True,
            read_only: bool = False) -> ocp.CheckpointManager:
    """The run's CheckpointManager; read_only for readers (inference), which never write."""
    if read_only:
        options = ocp.CheckpointManagerOptions(read_only=True, create=False, max_to_keep=None,
                                               save_interval_steps=0)
    else:
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, create=True, cleanup_tmp_directories=True,
            enable_async_checkpointing=async_save)
    absl_logger = logging.getLogger("absl")
    level = absl_logger.level
    absl_logger.setLevel(logging.ERROR)  # read-only managers warn that they are read-only
    try:
        return ocp.CheckpointManager(Path(out_dir).absolute() / "checkpoints", item_names=ITEMS,
                                     options=options)
    finally:
        absl_logger.setLevel(level)


def save(mngr: ocp.CheckpointManager, step: int, state, loader_state: dict, meta: dict,
         tokenizer_doc: dict) -> None:
    """Starts writing a checkpoint; with async saving the files land in the background (the
    arrays are copied off the device before this returns, so the step may donate them)."""
    mngr.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        loader=ocp.args.JsonSave(loader_state),
        meta=ocp.args.JsonSave(meta),
        tokenizer=ocp.args.JsonSave(tokenizer_doc)), force=True)


def abstract_like(shapes, shardings):
    """ShapeDtypeStructs carrying the target shardings (what Orbax restores into)."""
    return jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
                        shapes, shardings)


def restore(mngr: ocp.CheckpointManager, step: int, abstract_state) -> tuple:
    """(state, loader_state, meta) of checkpoint `step`, arrays placed as `abstract_state` says."""
    out = mngr.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state),
        loader=ocp.args.JsonRestore(),
        meta=ocp.args.JsonRestore()))
    return out["state"], out["loader"], out["meta"]


def _locate(run_dir_or_ckpt: str | os.PathLike) -> tuple[Path, int | None]:
    """(run directory, checkpoint step or None for the latest)."""
    path = Path(run_dir_or_ckpt)
    if (path / "checkpoints").is_dir():
        return path, None
    if path.name.isdigit() and path.parent.name == "checkpoints":
        return path.parent.parent, int(path.name)
    if path.name == "checkpoints" and path.is_dir():
        return path.parent, None
    raise FileNotFoundError(
        f"{path} is neither a training run directory (holding checkpoints/) nor a checkpoint "
        "directory OUT/checkpoints/<step>")


def load_params(run_dir_or_ckpt: str | os.PathLike):
    """(ModelConfig, params, tokenizer_path) from a run directory (its latest checkpoint) or a
    checkpoint directory OUT/checkpoints/<step>. Params are float32 arrays on the default device."""
    from train import config as train_config
    from train.optim import make_optimizer

    run_dir, step = _locate(run_dir_or_ckpt)
    mngr = manager(run_dir, read_only=True)
    step = mngr.latest_step() if step is None else step
    if step is None or step not in mngr.all_steps():
        raise FileNotFoundError(f"no checkpoint {'found' if step is None else step} in "
                                f"{run_dir / 'checkpoints'}")
    meta = mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
    cfg = train_config.from_dict(meta["config"])
    optimizer = make_optimizer(cfg.optim, cfg.steps)
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])

    def init():
        params = model.init(cfg.model, jax.random.key(0))
        return {"params": params, "opt_state": optimizer.init(params),
                "step": np.zeros((), np.int32)}

    shapes = jax.eval_shape(init)
    target = abstract_like(shapes, jax.tree.map(lambda _: device, shapes))
    state = mngr.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(target)))["state"]
    tokenizer_path = run_dir / meta["tokenizer_file"]
    if not tokenizer_path.exists():  # a checkpoint without its run directory's copy
        doc = mngr.restore(step, args=ocp.args.Composite(
            tokenizer=ocp.args.JsonRestore()))["tokenizer"]
        tokenizer_path = run_dir / "checkpoints" / str(step) / "tokenizer" / meta["tokenizer_file"]
        if not tokenizer_path.exists():
            tmp = tokenizer_path.with_name(tokenizer_path.name + ".tmp")
            tmp.write_text(json.dumps(doc))
            tmp.replace(tokenizer_path)
    mngr.close()
    return cfg.model, state["params"], str(tokenizer_path)
