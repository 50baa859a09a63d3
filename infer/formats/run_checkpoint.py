"""Reading a twofiles training run's checkpoints: the model config, parameters and tokenizer.

Checkpoints are written by `train.checkpoint` through Orbax's CheckpointManager; OUT/checkpoints/
<step>/ holds four items (state, loader, meta, tokenizer; see train/checkpoint.py). Reading them
lives here so that running a model never needs the trainer: the model config comes from `meta`,
and the saved state is restored from its own metadata (shapes and dtypes) onto one device, so
no optimizer has to be rebuilt to describe the Adam moments that are then dropped.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import jax
import orbax.checkpoint as ocp

import model

ITEMS = ("state", "loader", "meta", "tokenizer")


class _QuietAbsl:
    """Orbax warns through absl about what a read-only manager or a partial restore leaves out
    (items not asked for); a reader asks for exactly what it needs, so those are noise."""

    def __enter__(self):
        self.logger = logging.getLogger("absl")
        self.level = self.logger.level
        self.logger.setLevel(logging.ERROR)

    def __exit__(self, *exc):
        self.logger.setLevel(self.level)


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
    # A reader names each item's handler, so that the saved arrays' metadata (shapes, dtypes)
    # can be read before restoring them onto this process's devices, whatever the topology
    # they were written from.
    items = ({"item_handlers": {name: ocp.StandardCheckpointHandler() if name == "state"
                                else ocp.JsonCheckpointHandler() for name in ITEMS}}
             if read_only else {"item_names": ITEMS})
    with _QuietAbsl():  # read-only managers warn that they are read-only
        return ocp.CheckpointManager(Path(out_dir).absolute() / "checkpoints", options=options,
                                     **items)


def locate(run_dir_or_ckpt: str | os.PathLike) -> tuple[Path, int | None]:
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


def _restore_item(mngr, step: int, name: str, args):
    with _QuietAbsl():
        return mngr.restore(step, args=ocp.args.Composite(**{name: args}))[name]


def load_params(run_dir_or_ckpt: str | os.PathLike):
    """(ModelConfig, params, tokenizer document, meta) from a run directory (its latest
    checkpoint) or a checkpoint directory OUT/checkpoints/<step>. Params are float32 arrays on
    the default device; the tokenizer document is the one saved inside the checkpoint, the
    tokenizer the parameters were trained with."""
    run_dir, step = locate(run_dir_or_ckpt)
    mngr = manager(run_dir, read_only=True)
    try:
        step = mngr.latest_step() if step is None else step
        if step is None or step not in mngr.all_steps():
            raise FileNotFoundError(f"no checkpoint {'found' if step is None else step} in "
                                    f"{run_dir / 'checkpoints'}")
        meta = _restore_item(mngr, step, "meta", ocp.args.JsonRestore())
        cfg = model.ModelConfig.from_dict(meta["config"]["model"])
        device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
        with _QuietAbsl():
            saved = mngr.item_metadata(step)["state"]
        saved = getattr(saved, "tree", saved)  # newer Orbax wraps the tree in TreeMetadata
        target = jax.tree.map(
            lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), saved,
            is_leaf=lambda m: hasattr(m, "shape") and hasattr(m, "dtype"))
        state = _restore_item(mngr, step, "state", ocp.args.StandardRestore(target))
        tokenizer_doc = _restore_item(mngr, step, "tokenizer", ocp.args.JsonRestore())
    finally:
        mngr.close()
    return cfg, state["params"], tokenizer_doc, meta
