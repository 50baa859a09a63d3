"""Loss functions: pure `loss_fn(params, batch, frozen) -> (loss_sum, count, metrics)`.

The step (train.step) divides `loss_sum` and every metric by max(count, 1), summed over the
batch, so a loss function returns sums and never divides: a batch with nothing to count gives
loss 0 and a zero gradient instead of 0/0. Masks travel in the batch as arrays; a loss never
rebuilds them from token values.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

import model


def token_losses(params, inputs_BT, targets_BT, mcfg: model.ModelConfig, *,
                 positions_BT=None, segment_ids_BT=None) -> jax.Array:
    """Per-token negative log-likelihood in float32, [B, T]; packed rows pass their segments
    and positions (train.packing)."""
    logits_BTV, _ = model.forward(params, inputs_BT, mcfg, positions_BT=positions_BT,
                                  segment_ids_BT=segment_ids_BT)
    return optax.softmax_cross_entropy_with_integer_labels(
        logits_BTV.astype(jnp.float32), targets_BT)


def masked_next_token_loss(params, batch: dict, frozen, cfg: model.ModelConfig):
    """Next-token loss over the targets where batch["loss_mask"] is non-zero.

    batch: int32 "inputs" and "targets" [B, T] and "loss_mask" [B, T] (bool, int or float
    weights); packed conversations add "segment_ids" and "positions" (train.packing). A masked target never enters the computation (it is replaced by token 0 before
    the loss and multiplied by zero after), so padding or prompt tokens there, whatever their
    value, leave the loss and its gradient bit for bit unchanged. `frozen` is unused: the
    signature is the loop's. Returns (summed loss, summed mask, {}).
    """
    del frozen
    mask_BT = batch["loss_mask"].astype(jnp.float32)
    targets_BT = jnp.where(mask_BT != 0, batch["targets"], 0)
    nll_BT = token_losses(params, batch["inputs"], targets_BT, cfg,
                          positions_BT=batch.get("positions"),
                          segment_ids_BT=batch.get("segment_ids"))
    loss_sum = jnp.where(mask_BT != 0, nll_BT * mask_BT, 0.0).sum()
    return loss_sum, mask_BT.sum(), {}


def next_token_loss(cfg: model.ModelConfig):
    """Pretraining's loss: every target counts (the mask is all ones, made from the batch's
    shape inside the step, so the loader ships no mask)."""
    def loss_fn(params, batch, frozen):
        ones_BT = jnp.ones(batch["targets"].shape, jnp.float32)
        return masked_next_token_loss(params, {**batch, "loss_mask": ones_BT}, frozen, cfg)
    return loss_fn
