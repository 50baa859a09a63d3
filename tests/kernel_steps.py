"""A tiny bf16 model's training loss and gradients under a kernels section, for the tests that
compare a kernel's step with XLA's (tests/test_bf16_gemm.py, tests/test_swiglu_kernel.py)."""

import jax

import model
from train import losses


def loss_and_grads(kernels, compute_dtype="bfloat16"):
    """(loss, grads) of one batch of a 2-layer model under `kernels` (KernelsConfig); the same
    weights and tokens every call."""
    cfg = model.ModelConfig(vocab_size=256, d_model=64, n_layers=2, n_heads=2, n_kv_heads=1,
                            d_ff=128, max_seq_len=64, compute_dtype=compute_dtype)
    params = model.init(cfg, jax.random.key(0))
    tokens = jax.random.randint(jax.random.key(1), (2, 65), 0, 256)
    batch = {"inputs": tokens[:, :-1], "targets": tokens[:, 1:]}
    loss_fn = losses.next_token_loss(cfg, kernels)
    return jax.jit(jax.value_and_grad(lambda p: loss_fn(p, batch, None)[0]))(params)
