"""Packed documents (segment ids) and LoRA adapters, against the plain forward pass."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import model
from model import lora

CFG = model.ModelConfig(vocab_size=64, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2,
                        d_ff=48, max_seq_len=32)


@pytest.fixture(scope="module")
def params():
    return model.init(CFG, jax.random.key(0))


def test_packed_row_equals_each_document_alone(params):
    a, b = [5, 9, 3, 7, 11], [2, 8, 4]
    row = jnp.asarray([a + b])
    seg = jnp.asarray([[1] * len(a) + [2] * len(b)])
    pos = jnp.asarray([list(range(len(a))) + list(range(len(b)))])
    packed, _ = model.forward(params, row, CFG, positions_BT=pos, segment_ids_BT=seg)
    alone_a, _ = model.forward(params, jnp.asarray([a]), CFG)
    alone_b, _ = model.forward(params, jnp.asarray([b]), CFG)
    np.testing.assert_allclose(packed[0, :len(a)], alone_a[0], atol=1e-5)
    np.testing.assert_allclose(packed[0, len(a):], alone_b[0], atol=1e-5)
    # Without segment ids the second document sees the first: the check above can fail.
    leaky, _ = model.forward(params, row, CFG, positions_BT=pos)
    assert np.abs(np.asarray(leaky[0, len(a):] - alone_b[0])).max() > 1e-3


def test_fresh_adapters_leave_the_model_unchanged(params):
    adapters = lora.init(CFG, 4, lora.ADAPTABLE, jax.random.key(1))
    merged = lora.merge(params, adapters, alpha=8.0)
    for name in lora.ADAPTABLE:
        assert np.array_equal(merged["layers"][name], params["layers"][name])


def test_merge_adds_scaled_low_rank_product(params):
    adapters = lora.init(CFG, 2, ["wo", "wq"], jax.random.key(1))
    b = jax.random.normal(jax.random.key(2), adapters["layers"]["wo"]["b"].shape)
    adapters["layers"]["wo"]["b"] = b
    merged = lora.merge(params, adapters, alpha=4.0)
    L, H, K, D = params["layers"]["wo"].shape
    a = np.asarray(adapters["layers"]["wo"]["a"])
    for layer in range(L):  # wo's inputs are (heads, head_dim) flattened, its output embed
        expected = np.asarray(params["layers"]["wo"][layer]) + (
            (a[layer] @ np.asarray(b[layer])) * (4.0 / 2)).reshape(H, K, D)
        np.testing.assert_allclose(merged["layers"]["wo"][layer], expected, atol=1e-6)
    assert np.array_equal(merged["layers"]["wq"], params["layers"]["wq"])  # b is still zero
    assert np.array_equal(merged["layers"]["w_up"], params["layers"]["w_up"])  # not adapted


def test_unknown_target_is_refused():
    with pytest.raises(model.ConfigError, match="lora.targets"):
        lora.check_targets(["w_qkv"])
