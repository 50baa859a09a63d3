"""bf16 matmuls on the CPU's bf16 units (kernels/bf16_gemm.cc), as einsums of two operands.

    y = product("btd,dnk->btnk", x_BTD, w_DNK)   # bf16 (or float32, rounded to bf16) in,
                                                  # float32 out

`product` is `model.precision`'s product of two operands, plugged in by `model_ops()` (train
config `kernels.matmul = "bf16"`): every matmul of the bf16 training step, forward and both
gradients, and the chunked loss's. A spec becomes one [M, K] x [K, N] matmul when each operand's
contracted indices come first or last, all together and in the same order in both, and the
output is the left operand's free indices then the right's (or the other way round: the
operands are swapped); the kernel reads either operand transposed, so the gradients' specs
("btnk,dnk->btd", "btd,btnk->dnk") need no copies. Elsewhere it is `jnp.einsum`: other
specs, dtypes other than bf16, M, N or K not multiples of 32, CPUs with neither AMX nor
AVX512_BF16, and every non-CPU backend (`jax.lax.platform_dependent`). The products run on
Intel's AMX tiles where Linux grants them, else on AVX512_BF16's vdpbf16ps (AMD Zen 4 / 5;
also with TWOFILES_CPU_ISA=avx512): `engine()` says which.

The kernel runs on one host device: the arrays it is handed are whole (no sharding rule).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from infer.kernels import cpu_kernels
from model import ops as model_ops_module
from model.precision import einsum_f32

KERNEL = ("bf16_gemm.cc", "twofiles_bf16_gemm", "TwofilesBf16Gemm")
ENGINES = {1: "avx512_bf16", 2: "amx"}  # TwofilesBf16GemmEngine()'s answers


@functools.cache
def engine() -> str | None:
    """What the kernel's products run on in this process: "amx" (AMX-BF16 tiles, granted by
    Linux), "avx512_bf16" (vdpbf16ps; also forced by TWOFILES_CPU_ISA=avx512), or None where
    it cannot run (neither, TWOFILES_CPU_ISA=avx2, not built): XLA's dots then."""
    lib = cpu_kernels.library(*KERNEL)
    return None if lib is None else ENGINES.get(lib.TwofilesBf16GemmEngine())


def available() -> bool:
    """Whether the kernel runs in this process (on either engine)."""
    return engine() is not None


def as_matmul(spec: str, a_shape, b_shape):
    """How `spec` on operands of these shapes is one 2-D matmul: (swap, trans_a, trans_b, M, K,
    N), meaning: with the operands swapped if `swap`, the left one reshaped is A [M, K] ([K, M]
    if trans_a) and the right one B [K, N] ([N, K] if trans_b), and A B reshaped is the
    einsum's result. None where the spec is not such a matmul."""
    inputs, out = spec.replace(" ", "").split("->")
    lhs, rhs = inputs.split(",")
    if len(set(lhs)) < len(lhs) or len(set(rhs)) < len(rhs) or len(set(out)) < len(out):
        return None
    k = "".join(c for c in lhs if c in rhs)
    if not k or any(c in out for c in k):
        return None  # batched matmuls (an index in both inputs and the output) go to XLA
    free_l, free_r = "".join(c for c in lhs if c not in k), "".join(c for c in rhs if c not in k)
    if out == free_r + free_l and out != free_l + free_r:
        lhs, rhs, a_shape, b_shape, free_l, free_r = rhs, lhs, b_shape, a_shape, free_r, free_l
        swap = True
    elif out == free_l + free_r:
        swap = False
    else:
        return None
    # A: [free, k] as is, [k, free] transposed; B: [k, free] as is, [free, k] transposed.
    if lhs not in (free_l + k, k + free_l) or rhs not in (k + free_r, free_r + k):
        return None
    sizes = dict(zip(lhs, a_shape)) | dict(zip(rhs, b_shape))
    M, K, N = (int(np.prod([sizes[c] for c in idx], dtype=np.int64))
               for idx in (free_l, k, free_r))
    return swap, lhs != free_l + k, rhs != k + free_r, M, K, N


def _gemm(a2, b2, trans_a: bool, trans_b: bool, M: int, N: int, out_dtype):
    return jax.ffi.ffi_call(KERNEL[1], jax.ShapeDtypeStruct((M, N), out_dtype))(
        a2, b2, trans_a=np.int64(trans_a), trans_b=np.int64(trans_b))


def product(spec: str, a: jax.Array, b: jax.Array, out_dtype=jnp.float32) -> jax.Array:
    """`jnp.einsum(spec, a, b)` of a and b rounded to bf16 (float32 operands are rounded by the
    kernel as it packs them, nearest even as XLA's convert), summed in float32, the result in
    `out_dtype` (float32 or bf16: rounded once, at the end); on the kernel where it applies
    (see the module docstring)."""
    out_dtype = jnp.dtype(out_dtype)

    def xla(*_):
        return einsum_f32(spec, a.astype(jnp.bfloat16), b.astype(jnp.bfloat16), out_dtype)

    plan = as_matmul(spec, a.shape, b.shape)
    if (plan is None or a.dtype not in _TAKES or b.dtype not in _TAKES
            or out_dtype not in _TAKES or any(n % 32 for n in plan[3:]) or not available()):
        return xla()
    swap, ta, tb, M, K, N = plan
    x, y = (b, a) if swap else (a, b)
    x2 = x.reshape((K, M) if ta else (M, K))
    y2 = y.reshape((N, K) if tb else (K, N))
    out_shape = jax.eval_shape(functools.partial(einsum_f32, spec), a, b).shape

    def on_cpu(x2, y2):
        if _transposed_is_faster(ta, tb, M, N):
            return _gemm(y2, x2, True, False, N, M, out_dtype).T.reshape(out_shape)
        return _gemm(x2, y2, ta, tb, M, N, out_dtype).reshape(out_shape)

    return jax.lax.platform_dependent(x2, y2, cpu=on_cpu, default=xla)


def _transposed_is_faster(trans_a: bool, trans_b: bool, M: int, N: int) -> bool:
    """Whether to compute C^T = B^T A^T and transpose it: for a weight gradient (A^T [K, M],
    B [K, N], the tokens contracted) with M past one block of rows and N within one, on the
    vdpbf16ps engine, where each task packs its own columns of B only when C has one row of
    blocks (bf16_gemm.cc, CutBlocks). The down projection's dW (M = 1024, N = 384) ran at ~580
    GFLOP/s the direct way on the Zen 5; transposing its 1.5 MB result is cheap."""
    return trans_a and not trans_b and M > 512 >= N and engine() == "avx512_bf16"


_TAKES = (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float32))
product.rounds_to = "bfloat16"  # model.precision hands it float32 operands unrounded


def model_ops(base=None):
    """`base` (model.Ops; default the model's own) with its products on the kernel."""
    return dataclasses.replace(base or model_ops_module.DEFAULT, product=product)
