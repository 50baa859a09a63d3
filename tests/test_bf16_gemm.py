"""infer/kernels/bf16_gemm: which einsums are one matmul, and that its product equals numpy's on
the same bf16 operands for every layout the training step uses (forward, dx with B transposed,
dW with A transposed, operands swapped), through model.precision's gradient and the chunked
loss too. The kernel computes them on AMX tiles where the CPU has them, on vdpbf16ps where it
has AVX512_BF16 (asserted; the other engines run in a subprocess under TWOFILES_CPU_ISA);
elsewhere XLA's einsum does, and the same references hold."""

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

from infer.kernels import bf16_gemm
from model import precision


def _cpu_engine() -> str | None:
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    if " amx_bf16" in text and " amx_tile" in text:
        return "amx"
    return "avx512_bf16" if " avx512_bf16" in text and " avx512bw" in text else None


def test_the_kernel_runs_on_the_engine_the_cpu_has():
    assert bf16_gemm.engine() == _cpu_engine()


@pytest.mark.parametrize("spec,a,b,plan", [
    # (swap, trans_a, trans_b, M, K, N)
    ("btd,dnk->btnk", (2, 64, 96), (96, 4, 32), (False, False, False, 128, 96, 128)),
    ("btnk,dnk->btd", (2, 64, 4, 32), (96, 4, 32), (False, False, True, 128, 128, 96)),
    ("btd,btnk->dnk", (2, 64, 96), (2, 64, 4, 32), (False, True, False, 96, 128, 128)),
    ("nv,dv->nd", (64, 256), (96, 256), (False, False, True, 64, 256, 96)),
    ("dv,nd->nv", (96, 256), (64, 96), (True, False, False, 64, 96, 256)),
])
def test_a_spec_maps_to_one_matmul(spec, a, b, plan):
    assert bf16_gemm.as_matmul(spec, a, b) == plan


@pytest.mark.parametrize("spec,a,b", [
    ("btgrk,bsgk->bgrts", (2, 4, 1, 2, 8), (2, 4, 1, 8)),  # a batch index: XLA's batched dot
    ("dbt,tbk->dk", (8, 2, 4), (4, 2, 6)),                  # contracted in another order
    ("bdt,btk->dk", (2, 8, 4), (2, 4, 6)),                  # a free index between contracted
    ("ab,bc->cba", (4, 8), (8, 6)),                         # an output index of no operand
])
def test_other_specs_are_not_one_matmul(spec, a, b):
    assert bf16_gemm.as_matmul(spec, a, b) is None


def test_the_swapped_output_order_is_the_transposed_product():
    # C^T = B^T A^T: "ab,bc->ca" is "cb,ba->ca" with both operands read transposed
    assert bf16_gemm.as_matmul("ab,bc->ca", (4, 8), (8, 6)) == (True, True, True, 6, 8, 4)


def _bf16(shape, seed):
    x = np.random.default_rng(seed).normal(size=shape).astype(np.float32)
    return jnp.asarray(x, jnp.bfloat16), x.astype(ml_dtypes.bfloat16).astype(np.float64)


@pytest.mark.parametrize("spec,a_shape,b_shape", [
    ("btd,dnk->btnk", (2, 96, 160), (160, 3, 64)),      # a projection's forward
    ("btnk,dnk->btd", (2, 96, 3, 64), (160, 3, 64)),    # its dx: B transposed
    ("btd,btnk->dnk", (2, 96, 160), (2, 96, 3, 64)),    # its dW: A transposed, tokens summed
    ("dv,nd->nv", (160, 1056), (64, 160)),              # swapped operands, K past one pass
    ("nd,dv->nv", (64, 1088), (1088, 96)),              # K = 1088: three passes of 512
    ("nd,dv->nv", (40, 64), (64, 96)),                  # M not a multiple of 32: XLA's
])
def test_product_equals_numpy_on_the_bf16_operands(spec, a_shape, b_shape):
    a, a64 = _bf16(a_shape, 0)
    b, b64 = _bf16(b_shape, 1)
    got = jax.jit(lambda a, b: bf16_gemm.product(spec, a, b))(a, b)
    assert got.dtype == jnp.float32
    want = np.einsum(spec, a64, b64)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-4 * np.abs(want).max())


@pytest.mark.parametrize("spec,a_shape,b_shape", [
    ("md,dn->mn", (64, 1088), (1088, 192)),   # three K passes summed in float32, then rounded
    ("md,nd->mn", (96, 160), (160, 160)),     # B transposed, a 32-column tail
    ("dm,dn->mn", (256, 1024), (256, 384)),   # a weight gradient computed transposed
])
def test_a_bf16_result_is_the_float32_sum_rounded_once(spec, a_shape, b_shape):
    a, a64 = _bf16(a_shape, 7)
    b, b64 = _bf16(b_shape, 8)
    got = jax.jit(lambda a, b: bf16_gemm.product(spec, a, b, jnp.bfloat16))(a, b)
    assert got.dtype == jnp.bfloat16
    exact = np.einsum(spec, a64, b64)
    got = np.asarray(got, np.float32)
    # one rounding of the float32 sum: within half a bf16 step of the exact value (plus the
    # float32 sum's own error), and equal to the rounded exact value but for the rare sum that
    # lands on the other side of a rounding boundary
    np.testing.assert_allclose(got, exact, rtol=2.0**-8, atol=1e-5 * np.abs(exact).max())
    assert np.mean(got != exact.astype(np.float32).astype(ml_dtypes.bfloat16)) < 1e-3


def test_float32_operands_are_rounded_to_bf16_as_xla_rounds_them():
    x = np.random.default_rng(5).normal(size=(64, 96)).astype(np.float32)
    w = np.random.default_rng(6).normal(size=(96, 128)).astype(np.float32)
    got = jax.jit(lambda a, b: bf16_gemm.product("md,dn->mn", a, b))(x, w)
    want = jnp.einsum("md,dn->mn", jnp.asarray(x, jnp.bfloat16), jnp.asarray(w, jnp.bfloat16),
                      preferred_element_type=jnp.float32)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5,
                               atol=1e-5 * float(jnp.abs(want).max()))


def test_precision_dot_on_the_kernel_gives_the_bf16_gradients():
    """Forward, dx and dW of model.precision.dot with the kernel as its product, against numpy's
    products of the bf16-rounded operands and cotangent (the bf16 recipe)."""
    spec = "btd,de->bte"
    x, x64 = _bf16((2, 64, 96), 2)
    w, w64 = _bf16((96, 128), 3)
    g, g64 = _bf16((2, 64, 128), 4)
    x, w, g = (t.astype(jnp.float32) for t in (x, w, g))  # exactly bf16 values, in float32

    def loss(x, w):
        return jnp.sum(precision.dot(spec, x, w, "bfloat16", bf16_gemm.product) * g)
    y = jax.jit(lambda x, w: precision.dot(spec, x, w, "bfloat16", bf16_gemm.product))(x, w)
    dx, dw = jax.jit(jax.grad(loss, (0, 1)))(x, w)
    for got, want in ((y, np.einsum(spec, x64, w64)), (dx, np.einsum("bte,de->btd", g64, w64)),
                      (dw, np.einsum("btd,bte->de", x64, g64))):
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5,
                                   atol=1e-5 * np.abs(want).max())


def test_the_bf16_step_on_the_kernel_matches_xla():
    """The training loss and its gradients with kernels.matmul = bf16 equal XLA's bf16 products
    (same roundings, only the summation order differs)."""
    from tests.kernel_steps import loss_and_grads
    from train.config import KernelsConfig

    def grads(matmul, compute_dtype="bfloat16"):
        return loss_and_grads(KernelsConfig("xla", 64, matmul), compute_dtype)
    (loss_x, g_x), (loss_a, g_a) = grads("xla"), grads("bf16")
    np.testing.assert_allclose(loss_a, loss_x, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(g_a), jax.tree.leaves(g_x)):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4 * float(jnp.abs(b).max()))
    # float32 compute stays XLA's exact path whatever kernels.matmul says
    (loss_x, g_x), (loss_a, g_a) = grads("xla", "float32"), grads("bf16", "float32")
    assert float(loss_a) == float(loss_x)
    for a, b in zip(jax.tree.leaves(g_a), jax.tree.leaves(g_x)):
        np.testing.assert_array_equal(a, b)


def test_an_unknown_matmul_kernel_is_refused_by_name():
    from train.config import ConfigError, KernelsConfig

    with pytest.raises(ConfigError, match="kernels.matmul must be xla or bf16"):
        KernelsConfig(matmul="onednn")


def test_the_kernels_old_name_still_loads():
    from train.config import KernelsConfig

    assert KernelsConfig(matmul="amx").matmul == "bf16"  # run configs written before the rename



_OTHER_ENGINE = """
import json, sys
import jax, numpy as np
from infer.kernels import bf16_gemm
errors, bf16_errors = [], []
for spec, sa, sb in json.loads(sys.argv[1]):
    rng = np.random.default_rng(0)
    a, b = (rng.normal(size=s).astype(np.float32) for s in (sa, sb))
    got = np.asarray(jax.jit(lambda a, b: bf16_gemm.product(spec, a, b))(a, b))
    r = lambda x: np.asarray(jax.numpy.asarray(x, "bfloat16").astype("float32"), np.float64)
    want = np.einsum(spec, r(a), r(b))
    errors.append(float(np.abs(got - want).max() / np.abs(want).max()))
    got16 = jax.jit(lambda a, b: bf16_gemm.product(spec, a, b, "bfloat16"))(a, b)
    bf16_errors.append(float(np.max(np.abs(np.asarray(got16, np.float32) - want)
                                    / (np.abs(want) + 1e-3 * np.abs(want).max()))))
print(json.dumps({"engine": bf16_gemm.engine(), "errors": errors, "bf16": bf16_errors}))
"""


@pytest.mark.parametrize("isa,engine", [("avx512", "avx512_bf16"), ("avx2", None)])
def test_the_other_engines_give_the_same_products(isa, engine):
    """TWOFILES_CPU_ISA=avx512 runs the vdpbf16ps engine (AMD's Zen 4 / 5 path) on an AMX CPU
    too; avx2 sends every product to XLA. Both give numpy's products of the rounded operands,
    in every layout and both register blocks (N a multiple of 64 and not), with float32 or
    bf16 results."""
    if engine and _cpu_engine() is None:
        pytest.skip("this CPU has no AVX512_BF16: the vdpbf16ps engine cannot run here")
    cases = [("md,dn->mn", (64, 1088), (1088, 192)), ("md,nd->mn", (96, 160), (160, 160)),
             ("dm,dn->mn", (576, 64), (576, 96)), ("dv,nd->nv", (160, 1056), (64, 160))]
    env = dict(os.environ, TWOFILES_CPU_ISA=isa)
    out = subprocess.run([sys.executable, "-c", _OTHER_ENGINE, json.dumps(cases)], env=env,
                         capture_output=True, text=True, check=True).stdout
    got = json.loads(out.strip().splitlines()[-1])
    assert got["engine"] == engine
    assert max(got["errors"]) < 1e-5, got["errors"]
    assert max(got["bf16"]) <= 2.0**-8, got["bf16"]  # bf16 results: one rounding
