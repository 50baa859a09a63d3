"""On 8 simulated devices, parameters are split as the rules say and the sharded forward equals
the single-device one."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import model
from model import sharding

CFG = model.apply_overrides(model.preset("tiny"), [
    "vocab_size=256", "d_model=64", "n_heads=8", "n_kv_heads=4", "d_ff=128", "n_layers=2",
    "tie_embeddings=false"])
L, D, H, G, K, F, V = 2, 64, 8, 4, 8, 128, 256

# Local (per-device) shapes, written out by hand from the rules: embed->fsdp,
# vocab/heads/kv_heads/mlp->tensor, layers and head_dim whole.
def expected_local_shapes(fsdp, tensor):
    return {
        "embed": (V // tensor, D // fsdp),
        "unembed": (D // fsdp, V // tensor),
        "final_norm": (D // fsdp,),
        "attn_norm": (L, D // fsdp),
        "wq": (L, D // fsdp, H // tensor, K),
        "wk": (L, D // fsdp, G // tensor, K),
        "wo": (L, H // tensor, K, D // fsdp),
        "w_gate": (L, D // fsdp, F // tensor),
        "w_down": (L, F // tensor, D // fsdp),
    }


@pytest.fixture(scope="module")
def reference():
    # Compiled, as init_sharded is: XLA may fuse the random transform differently from eager
    # mode, so eager and compiled init agree only to rounding.
    params = jax.jit(lambda k: model.init(CFG, k))(jax.random.key(0))
    tokens = jnp.asarray(np.random.default_rng(0).integers(0, V, (8, 32)))
    logits, _ = jax.jit(lambda p, t: model.forward(p, t, CFG))(params, tokens)
    return params, tokens, np.asarray(logits)


@pytest.mark.parametrize("shape", [(8, 1, 1), (2, 2, 2), (1, 2, 4)])
def test_sharded_init_and_forward(shape, reference):
    assert jax.device_count() == 8, "tests/conftest.py sets 8 simulated CPU devices"
    ref_params, tokens, ref_logits = reference
    mesh = sharding.make_mesh(*shape)
    params = sharding.init_sharded(CFG, jax.random.key(0), mesh)

    flat = {**params["layers"], **{k: v for k, v in params.items() if k != "layers"}}
    for name, local in expected_local_shapes(shape[1], shape[2]).items():
        assert flat[name].addressable_shards[0].data.shape == local, name
        assert len({d.id for d in flat[name].sharding.device_set}) == 8

    # Created in place, the values are those of the single-device init.
    np.testing.assert_array_equal(np.asarray(params["layers"]["wq"]),
                                  np.asarray(ref_params["layers"]["wq"]))

    batch = jax.device_put(tokens, sharding.batch_sharding(mesh))
    assert batch.addressable_shards[0].data.shape == (8 // (shape[0] * shape[1]), 32)
    logits, _ = jax.jit(lambda p, t: model.forward(p, t, CFG))(params, batch)
    np.testing.assert_allclose(np.asarray(logits), ref_logits, atol=1e-5, rtol=1e-5)


def test_indivisible_dimension_is_replicated_not_an_error():
    cfg = model.apply_overrides(CFG, ["n_kv_heads=2", "n_heads=6", "d_model=48"])
    mesh = sharding.make_mesh(1, 2, 4)
    specs = sharding.param_shardings(cfg, mesh)
    assert specs["layers"]["wk"].spec == jax.sharding.PartitionSpec(None, "fsdp", None, None)


def test_bad_mesh_is_refused_with_the_device_count():
    with pytest.raises(ValueError, match="8 devices"):
        sharding.make_mesh(3, 1, 1)


def test_an_axis_without_a_rule_is_an_error_not_replicated():
    # Why the rules are ours and not flax's logical_to_mesh_axes: that one replicates an
    # unknown axis silently, so a typo in a parameter's axes would cost memory unnoticed.
    mesh = sharding.make_mesh(2, 2, 2)
    with pytest.raises(KeyError, match="'embd'"):
        sharding.logical_to_spec(("vocab", "embd"), (256, 64), mesh)
