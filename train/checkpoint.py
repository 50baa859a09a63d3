"""Training checkpoints through Orbax's CheckpointManager (reading them for inference:
infer.formats.run_checkpoint).

OUT/checkpoints/<step>/ holds three items:
  state   params, optimizer state and step (sharded arrays, written by every process together)
  loader  the data iterator's state, so a resumed run sees exactly the batches it would have
  meta    step, RNG key, the resolved config and the tokenizer's file name and fingerprint
  tokenizer  the tokenizer file itself (it is JSON), so a checkpoint copied alone still decodes
Orbax writes each step under a temporary name and renames it when complete, so a run killed at
any moment leaves only whole checkpoints; the temporary leftovers are cleaned up on reopening.
"""

from __future__ import annotations

import jax
import orbax.checkpoint as ocp

# Opening a run's manager and reading checkpoints for inference are infer's (infer never
# imports train); the trainer writes through the same manager.
from infer.formats.run_checkpoint import ITEMS, manager  # noqa: F401


def save(mngr: ocp.CheckpointManager, step: int, state, loader_state: dict, meta: dict,
         tokenizer_doc: dict) -> None:
    """Starts writing a checkpoint; with async saving the files land in the background (the
    arrays are copied off the device before this returns, so the step may donate them)."""
    mngr.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        loader=ocp.args.JsonSave(loader_state),
        meta=ocp.args.JsonSave(meta),
        tokenizer=ocp.args.JsonSave(tokenizer_doc or {})), force=True)


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
