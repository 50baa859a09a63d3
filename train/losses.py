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
from model import precision
from infer.kernels import flash_attention


def token_losses(params, inputs_BT, targets_BT, mcfg: model.ModelConfig, *,
                 positions_BT=None, segment_ids_BT=None, kernels=None) -> jax.Array:
    """Per-token negative log-likelihood in float32, [B, T]; packed rows pass their segments
    and positions (train.packing). `kernels` (train.config.KernelsConfig) may ask for flash
    attention and a chunked loss; None (or its defaults) is model.forward's logits as they
    always were."""
    attention = kernels.attention if kernels is not None else "xla"
    chunk = kernels.loss_chunk if kernels is not None else 0
    ops = model.ops.DEFAULT
    if attention == "flash":
        ops = flash_attention.model_ops()
    if chunk == 0:
        logits_BTV, _ = model.forward(params, inputs_BT, mcfg, positions_BT=positions_BT,
                                      segment_ids_BT=segment_ids_BT, ops=ops)
        return optax.softmax_cross_entropy_with_integer_labels(
            logits_BTV.astype(jnp.float32), targets_BT)
    hidden_BTD, _ = model.forward(params, inputs_BT, mcfg, positions_BT=positions_BT,
                                  segment_ids_BT=segment_ids_BT, ops=ops, return_hidden=True)
    unembed_DV = params["embed"].T if mcfg.tie_embeddings else params["unembed"]
    return chunked_token_losses(hidden_BTD, unembed_DV, targets_BT, chunk, mcfg.compute_dtype)


def chunked_token_losses(hidden_BTD, unembed_DV, targets_BT, chunk: int,
                         compute_dtype: str = "float32") -> jax.Array:
    """The output projection and cross-entropy fused in chunks of `chunk` tokens, [B, T].

    The same values as projecting all of `hidden_BTD` to logits and taking the loss, but only
    one chunk's [chunk, V] logits exist at a time, forward and backward: a scan over chunks
    whose body is rematerialised (jax.checkpoint), so the backward recomputes each chunk's
    logits instead of keeping [B, T, V] float32 (4096 x 8192 x 4 B = 134 MB for the bench
    step, written once and read back twice). The unembedding's gradient is summed over chunks
    by the scan's transpose. Matmuls in `compute_dtype` (forward and backward, model.precision),
    accumulated and reduced in float32.
    """
    B, T, D = hidden_BTD.shape
    n = B * T
    pad = -n % chunk
    h_CND = jnp.pad(hidden_BTD.reshape(n, D), ((0, pad), (0, 0))).reshape(-1, chunk, D)
    t_CN = jnp.pad(targets_BT.reshape(n), (0, pad)).reshape(-1, chunk)

    @jax.checkpoint
    def chunk_losses(h_ND, t_N):
        # The float32 unembedding goes in, so each chunk's dW is float32, summed in float32.
        logits_NV = precision.dot("nd,dv->nv", h_ND, unembed_DV, compute_dtype)
        return optax.softmax_cross_entropy_with_integer_labels(logits_NV, t_N)

    _, nll_CN = jax.lax.scan(lambda c, x: (c, chunk_losses(*x)), None, (h_CND, t_CN))
    return nll_CN.reshape(-1)[:n].reshape(B, T)


def masked_next_token_loss(params, batch: dict, frozen, cfg: model.ModelConfig, kernels=None):
    """Next-token loss over the targets where batch["loss_mask"] is non-zero.

    batch: int32 "inputs" and "targets" [B, T] and "loss_mask" [B, T] (bool, int or float
    weights); packed conversations add "segment_ids" and "positions" (train.packing). A masked target never enters the computation (it is replaced by token 0 before
    the loss and multiplied by zero after), so padding or prompt tokens there, whatever their
    value, leave the loss and its gradient bit for bit unchanged. `frozen` is unused: the
    signature is the loop's. `kernels`: see token_losses. Returns (summed loss, summed mask, {}).
    """
    del frozen
    mask_BT = batch["loss_mask"].astype(jnp.float32)
    targets_BT = jnp.where(mask_BT != 0, batch["targets"], 0)
    nll_BT = token_losses(params, batch["inputs"], targets_BT, cfg,
                          positions_BT=batch.get("positions"),
                          segment_ids_BT=batch.get("segment_ids"), kernels=kernels)
    loss_sum = jnp.where(mask_BT != 0, nll_BT * mask_BT, 0.0).sum()
    return loss_sum, mask_BT.sum(), {}


def next_token_loss(cfg: model.ModelConfig, kernels=None):
    """Pretraining's loss: every target counts (the mask is all ones, made from the batch's
    shape inside the step, so the loader ships no mask). `kernels`: see token_losses."""
    def loss_fn(params, batch, frozen):
        ones_BT = jnp.ones(batch["targets"].shape, jnp.float32)
        return masked_next_token_loss(params, {**batch, "loss_mask": ones_BT}, frozen, cfg,
                                      kernels)
    return loss_fn
