"""The FLOP formula agrees with XLA's own count of the compiled forward pass."""

import jax
import jax.numpy as jnp
import pytest

import model


# One layer: XLA's cost analysis counts the body of the layer scan (a while loop) once,
# whatever its trip count, so a deeper model would be under-counted by XLA, not by us.
@pytest.mark.parametrize("overrides", [
    ["vocab_size=1024", "d_model=256", "n_heads=4", "n_kv_heads=4", "d_ff=1024", "n_layers=1"],
    ["vocab_size=512", "d_model=192", "n_heads=6", "n_kv_heads=2", "d_ff=512", "n_layers=1",
     "tie_embeddings=false"],
])
def test_forward_flops_match_xla_cost_analysis(overrides):
    cfg = model.apply_overrides(model.preset("tiny"), overrides)
    B, T = 2, 128
    params = jax.eval_shape(lambda k: model.init(cfg, k), jax.random.key(0))
    tokens = jax.ShapeDtypeStruct((B, T), jnp.int32)
    compiled = jax.jit(lambda p, t: model.forward(p, t, cfg)[0]).lower(params, tokens).compile()
    analysis = compiled.cost_analysis()
    analysis = analysis[0] if isinstance(analysis, (list, tuple)) else analysis
    xla_flops = analysis["flops"]
    ours = model.flops_per_token(cfg, seq_len=T, training=False) * B * T
    # XLA also counts elementwise work (norms, softmax, rotary), which the formula leaves out.
    assert ours == pytest.approx(xla_flops, rel=0.05)
    assert ours <= xla_flops


def test_training_flops_are_three_forwards_and_near_6N_for_large_models():
    cfg = model.preset("llama2-7b")
    fwd = model.flops_per_token(cfg, training=False)
    assert model.flops_per_token(cfg) == 3 * fwd
    n = model.count_params(cfg)["params"]
    # Kaplan's 6N approximation holds to within the attention and embedding terms.
    assert model.flops_per_token(cfg) == pytest.approx(6 * n, rel=0.15)
