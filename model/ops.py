"""The operations a transformer block delegates, so inference and kernels plug into one block.

`model.transformer.block` is the only definition of a layer. What differs between training,
evaluation and fast decoding is not the layer but how two things are done:

- `matmul(name, x, layer, cfg) -> float32`: the block's four projections, by name:
    "qkv"      x_BTD  -> [B, T, H + 2G, K] or [B, T, (H + 2G) * K]  (q, k, v heads in that order)
    "wo"       x_BTHK -> [B, T, D]
    "gate_up"  x_BTD  -> [B, T, 2F]   (gate first, then up; may come in the compute dtype)
    "down"     x_BTF  -> [B, T, D]
  The default (`None`) multiplies `model`'s own parameters (wq, wk, wv, wo, w_gate, w_up,
  w_down) in the compute dtype with float32 accumulation, gate_up's result rounded to the
  compute dtype (its consumer, the activation, rounds for the down projection anyway).
  Inference passes its fused float32 or int8 matrices instead (`infer/runtime/
  decode_model.py`): `layer` is whatever tree the caller's layer loop hands the block, so the
  operation owns the weights' layout.
- `product(spec, a, b, out_dtype=float32)`: the two-operand matmul under the default
  `matmul`'s and the unembedding's bf16 products, forward and backward (model.precision.dot),
  summed in float32; None is XLA's (`precision.einsum_f32`), a CPU kernel (infer/kernels/
  bf16_gemm) replaces it.
- `attention(q_BTHK, k_BTGK, v_BTGK, kv, ctx, cfg) -> (out_BTHK, new_kv)`: q, k, v already
  rotated; `kv` is this layer's cache (None without one) in the operation's own layout, and
  the operation writes the new k and v into it. `ctx` is what the caller built for it (for the
  default, an `AttentionContext`); the block only passes it through. The default is attention
  in XLA over a dense mask; a fused or flash kernel, or a cache of slots with a position per
  row, replaces it.
- `swiglu(gate_up_BT2F) -> [B, T, F]`: the MLP's gated activation, silu(gate) * up; the default
  is `model.activations.swiglu`, a CPU kernel's backward (infer/kernels/swiglu) replaces it.

`None` everywhere is `model.forward`'s own behaviour, unchanged.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax


@dataclasses.dataclass(frozen=True)
class Ops:
    """The block's pluggable operations; a field left None uses `model`'s own."""

    matmul: Callable | None = None
    attention: Callable | None = None
    product: Callable | None = None
    swiglu: Callable | None = None


@dataclasses.dataclass(frozen=True)
class AttentionContext:
    """What `model.forward` gives its attention operation besides q, k and v.

    mask_BTS: which slots each new token attends to (causal, padding and segments applied);
    write_at: the cache slot of the first new token (0 without a cache); valid_BT and
    segment_ids_BT: the caller's padding and packing, for kernels that want them rather than
    a dense mask (None when not given). Without a cache S = T.
    """

    mask_BTS: jax.Array
    write_at: Any
    valid_BT: jax.Array | None = None
    segment_ids_BT: jax.Array | None = None


DEFAULT = Ops()
