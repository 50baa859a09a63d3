"""Loss functions: pure `loss_fn(params, batch, frozen) -> (loss_sum, count, metrics)`.

The step (train.step) divides `loss_sum` and every metric by max(count, 1), summed over the
batch, so a loss function returns sums and never divides: a batch with nothing to count gives
loss 0 and a zero gradient instead of 0/0. Masks travel in the batch as arrays; a loss never
rebuilds them from token values.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

import model
from model import precision
from infer.kernels import bf16_gemm, flash_attention, swiglu, xent


def _hidden_and_unembed(params, inputs_BT, mcfg, positions_BT, segment_ids_BT, ops):
    """The final-normed hidden states [B, T, D] and the output projection [D, V]."""
    hidden_BTD, _ = model.forward(params, inputs_BT, mcfg, positions_BT=positions_BT,
                                  segment_ids_BT=segment_ids_BT, ops=ops, return_hidden=True)
    return hidden_BTD, params["embed"].T if mcfg.tie_embeddings else params["unembed"]


def _kernel_options(kernels):
    """(model ops, loss chunk) of a train.config.KernelsConfig or None: its attention, its
    matmuls' product and its activation."""
    if kernels is None:
        return model.ops.DEFAULT, 0
    ops = flash_attention.model_ops() if kernels.attention == "flash" else model.ops.DEFAULT
    if kernels.matmul == "bf16":
        ops = bf16_gemm.model_ops(ops)
    if kernels.swiglu == "fused":
        ops = swiglu.model_ops(ops)
    return ops, kernels.loss_chunk


def token_losses(params, inputs_BT, targets_BT, mcfg: model.ModelConfig, *,
                 positions_BT=None, segment_ids_BT=None, kernels=None) -> jax.Array:
    """Per-token negative log-likelihood in float32, [B, T]; packed rows pass their segments
    and positions (train.packing). `kernels` (train.config.KernelsConfig) may ask for flash
    attention and a chunked loss; None (or its defaults) is model.forward's logits as they
    always were."""
    ops, chunk = _kernel_options(kernels)
    if chunk == 0:
        logits_BTV, _ = model.forward(params, inputs_BT, mcfg, positions_BT=positions_BT,
                                      segment_ids_BT=segment_ids_BT, ops=ops)
        return optax.softmax_cross_entropy_with_integer_labels(
            logits_BTV.astype(jnp.float32), targets_BT)
    hidden_BTD, unembed_DV = _hidden_and_unembed(params, inputs_BT, mcfg, positions_BT,
                                                 segment_ids_BT, ops)
    return chunked_token_losses(hidden_BTD, unembed_DV, targets_BT, chunk, mcfg.compute_dtype,
                                ops.product)


def _in_chunks(x_BT, chunk: int) -> jax.Array:
    """[B, T, ...] as [C, chunk, ...]: the B x T tokens in order, zero-padded to whole chunks."""
    x_N = x_BT.reshape(-1, *x_BT.shape[2:])
    pad = -x_N.shape[0] % chunk
    x_N = jnp.pad(x_N, ((0, pad),) + ((0, 0),) * (x_N.ndim - 1))
    return x_N.reshape(-1, chunk, *x_N.shape[1:])


def chunked_token_losses(hidden_BTD, unembed_DV, targets_BT, chunk: int,
                         compute_dtype: str = "float32", product=None) -> jax.Array:
    """The output projection and cross-entropy fused in chunks of `chunk` tokens, [B, T].

    The same values as projecting all of `hidden_BTD` to logits and taking the loss, but only
    one chunk's [chunk, V] logits exist at a time, forward and backward: a scan over chunks
    whose body is rematerialised (jax.checkpoint), so the backward recomputes each chunk's
    logits instead of keeping [B, T, V] float32 (4096 x 8192 x 4 B = 134 MB for the bench
    step, written once and read back twice). The unembedding's gradient is summed over chunks
    by the scan's transpose. Matmuls in `compute_dtype` (forward and backward, model.precision),
    accumulated and reduced in float32, on `product` (model.precision.dot's).
    """
    B, T, D = hidden_BTD.shape
    n = B * T
    h_CND, t_CN = _in_chunks(hidden_BTD, chunk), _in_chunks(targets_BT, chunk)

    @jax.checkpoint
    def chunk_losses(h_ND, t_N):
        # The float32 unembedding goes in, so each chunk's dW is float32, summed in float32.
        logits_NV = precision.dot("nd,dv->nv", h_ND, unembed_DV, compute_dtype, product)
        return optax.softmax_cross_entropy_with_integer_labels(logits_NV, t_N)

    _, nll_CN = jax.lax.scan(lambda c, x: (c, chunk_losses(*x)), None, (h_CND, t_CN))
    return nll_CN.reshape(-1)[:n].reshape(B, T)


def chunked_loss_sum(hidden_BTD, unembed_DV, targets_BT, weights_BT, chunk: int,
                     compute_dtype: str = "float32", product=None) -> jax.Array:
    """sum(weights * nll) of the output projection + cross-entropy, in chunks of `chunk` tokens,
    with both gradients computed in the forward pass.

    The gradient of a weighted sum with respect to a chunk's logits, weights * (softmax -
    one_hot), is known once the chunk's logits are: so each chunk's dh and its share of dW are
    computed right there, and the backward only scales them by the cotangent (Liger-Kernel's
    fused linear cross-entropy does the same on GPUs). chunked_token_losses, whose per-token
    cotangents arrive only in the backward, has to compute every chunk's logits twice; this
    does it once: 3 of 4 vocabulary-sized matmuls, and no second softmax. Only one chunk's
    [chunk, V] logits exist at a time. `weights_BT` get no gradient (they are masks or
    fixed token weights). Matmul inputs in `compute_dtype` with float32 results; the
    logits' gradient is rounded to `compute_dtype` before its two matmuls, as
    model.precision's backward rounds a cotangent. The matmuls run on `product`
    (model.precision.einsum_f32 by default).
    """
    if product is None or jnp.dtype(compute_dtype) == jnp.float32:
        product = precision.einsum_f32  # float32 stays XLA's, the exact path
    return _chunked_loss_sum(hidden_BTD, unembed_DV, targets_BT, weights_BT, chunk,
                             compute_dtype, product)


def _loss_sum_and_grads(hidden_BTD, unembed_DV, targets_BT, weights_BT, chunk, compute_dtype,
                        product):
    B, T, D = hidden_BTD.shape
    V = unembed_DV.shape[1]
    n = B * T
    h_CND = _in_chunks(hidden_BTD.astype(compute_dtype), chunk)
    # Each chunk's h also as [D, N], transposed here, outside the scan, where XLA cannot fold
    # the transpose into the dW dot: folded (a dot contracting its left operand's first axis),
    # XLA:CPU's YNNPACK declines a bf16 dot and runs it in float32, both operands converted
    # (~60 ms of the bench step, profiled; an optimization barrier on h.T inside the body did
    # not survive XLA's passes).
    h_CDN = jnp.swapaxes(h_CND, 1, 2)
    t_CN, w_CN = _in_chunks(targets_BT, chunk), _in_chunks(weights_BT.astype(jnp.float32), chunk)
    # Materialised once in the compute dtype; the barrier keeps XLA from folding a tied
    # embedding's transpose into the dots (see model.precision's backward).
    w_DV = jax.lax.optimization_barrier(unembed_DV.astype(compute_dtype))

    def body(dw_DV, chunk_in):
        h_ND, h_DN, t_N, weight_N = chunk_in
        logits_NV = product("nd,dv->nv", h_ND, w_DV)
        # One pass over the logits on CPUs (infer/kernels/xent), the gradient written in the
        # dtype the two matmuls take it in.
        g_NV, nll_N = xent.grad_and_nll(logits_NV, t_N, weight_N, compute_dtype)
        dh_ND = product("nv,dv->nd", g_NV, w_DV)
        dw_DV = dw_DV + jax.lax.optimization_barrier(product("dn,nv->dv", h_DN, g_NV))
        return dw_DV, (jnp.sum(weight_N * nll_N), dh_ND)

    dw_DV, (sums_C, dh_CND) = jax.lax.scan(body, jnp.zeros((D, V), jnp.float32),
                                          (h_CND, h_CDN, t_CN, w_CN))
    dh_BTD = dh_CND.reshape(-1, D)[:n].reshape(B, T, D)
    return sums_C.sum(), (dh_BTD, dw_DV)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6))
def _chunked_loss_sum(hidden_BTD, unembed_DV, targets_BT, weights_BT, chunk, compute_dtype,
                      product):
    # Undifferentiated (an evaluation), the value alone: no gradients to make and drop.
    nll_BT = chunked_token_losses(hidden_BTD, unembed_DV, targets_BT, chunk, compute_dtype,
                                  product)
    return jnp.sum(weights_BT.astype(jnp.float32) * nll_BT)


def _chunked_loss_sum_fwd(hidden_BTD, unembed_DV, targets_BT, weights_BT, chunk, compute_dtype,
                          product):
    total, (dh_BTD, dw_DV) = _loss_sum_and_grads(hidden_BTD, unembed_DV, targets_BT, weights_BT,
                                                 chunk, compute_dtype, product)
    # The primals' dtypes travel as zero-size arrays (residuals must be JAX types).
    kinds = (jnp.zeros((0,), hidden_BTD.dtype), jnp.zeros((0,), unembed_DV.dtype))
    return total, (dh_BTD, dw_DV, kinds, targets_BT, weights_BT)


def _chunked_loss_sum_bwd(chunk, compute_dtype, product, res, g):
    dh_BTD, dw_DV, (h_kind, w_kind), targets_BT, weights_BT = res
    zero_t = np.zeros(targets_BT.shape, jax.dtypes.float0)
    return ((g * dh_BTD).astype(h_kind.dtype), (g * dw_DV).astype(w_kind.dtype), zero_t,
            jnp.zeros_like(weights_BT))


_chunked_loss_sum.defvjp(_chunked_loss_sum_fwd, _chunked_loss_sum_bwd)


def masked_next_token_loss(params, batch: dict, frozen, cfg: model.ModelConfig, kernels=None):
    """Next-token loss over the targets where batch["loss_mask"] is non-zero.

    batch: int32 "inputs" and "targets" [B, T] and "loss_mask" [B, T] (bool, int or float
    weights); packed conversations add "segment_ids" and "positions" (train.packing). A
    masked target never enters the computation (it is replaced by token 0 before
    the loss and multiplied by zero after), so padding or prompt tokens there, whatever their
    value, leave the loss and its gradient bit for bit unchanged. `frozen` is unused: the
    signature is the loop's. `kernels`: see token_losses. Returns (summed loss, summed mask, {}).
    """
    del frozen
    mask_BT = batch["loss_mask"].astype(jnp.float32)
    targets_BT = jnp.where(mask_BT != 0, batch["targets"], 0)
    ops, chunk = _kernel_options(kernels)
    if chunk:  # the sum's gradient is known in the forward: no second pass over the logits
        hidden_BTD, unembed_DV = _hidden_and_unembed(params, batch["inputs"], cfg,
                                                     batch.get("positions"),
                                                     batch.get("segment_ids"), ops)
        loss_sum = chunked_loss_sum(hidden_BTD, unembed_DV, targets_BT, mask_BT, chunk,
                                    cfg.compute_dtype, ops.product)
        return loss_sum, mask_BT.sum(), {}
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
