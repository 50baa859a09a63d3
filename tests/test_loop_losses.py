"""The step built from a loss function: masks decide what counts, bit for bit; a batch with
nothing to count is harmless; a trainable mask leaves every other leaf exactly as it was."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import model
from tests.train_helpers import one_device_mesh
from train import losses
from train import state as state_lib
from train.step import make_step

CFG = model.preset("tiny")
B, T = 4, 16


@pytest.fixture(scope="module")
def params():
    return model.init(CFG, jax.random.key(0))


def batch(seed: int, mask_fraction: float = 0.5) -> dict:
    rng = np.random.default_rng(seed)
    return {"inputs": jnp.asarray(rng.integers(0, CFG.vocab_size, (B, T)), jnp.int32),
            "targets": jnp.asarray(rng.integers(0, CFG.vocab_size, (B, T)), jnp.int32),
            "loss_mask": jnp.asarray(rng.random((B, T)) < mask_fraction, jnp.int32)}


loss_and_grad = jax.jit(jax.value_and_grad(
    lambda p, b: losses.masked_next_token_loss(p, b, None, CFG)[0]))


def bits(tree) -> list[np.ndarray]:
    return [np.asarray(x).view(np.uint32) for x in jax.tree.leaves(tree)]


def test_targets_at_masked_positions_change_nothing_bit_for_bit(params):
    b = batch(1)
    masked = np.asarray(b["loss_mask"]) == 0
    assert masked.any() and (~masked).any()
    other = np.asarray(b["targets"]).copy()
    other[masked] = np.random.default_rng(2).integers(0, CFG.vocab_size, int(masked.sum()))
    other[masked.nonzero()[0][0], masked.nonzero()[1][0]] = -100  # padding, out of range
    loss_a, grads_a = loss_and_grad(params, b)
    loss_b, grads_b = loss_and_grad(params, {**b, "targets": jnp.asarray(other)})
    assert not np.array_equal(other, np.asarray(b["targets"]))
    assert np.asarray(loss_a).view(np.uint32) == np.asarray(loss_b).view(np.uint32)
    for a, c in zip(bits(grads_a), bits(grads_b)):
        assert np.array_equal(a, c)
    # ...while a target that counts does change them.
    flipped = np.asarray(b["targets"]).copy()
    i, j = (~masked).nonzero()[0][0], (~masked).nonzero()[1][0]
    flipped[i, j] = (flipped[i, j] + 1) % CFG.vocab_size
    assert float(loss_and_grad(params, {**b, "targets": jnp.asarray(flipped)})[0]) != float(loss_a)


def test_loss_sum_counts_only_masked_in_tokens(params):
    b = batch(3)
    loss_sum, count, _ = losses.masked_next_token_loss(params, b, None, CFG)
    nll = np.asarray(losses.token_losses(params, b["inputs"], b["targets"], CFG))
    mask = np.asarray(b["loss_mask"]).astype(bool)
    assert float(count) == mask.sum()
    np.testing.assert_allclose(float(loss_sum), nll[mask].sum(), rtol=1e-6)


def _step(optimizer, mesh, trainable=None, loss_fn=None):
    abstract = state_lib.abstract_params(CFG, mesh)
    optimizer = state_lib.masked_optimizer(optimizer, trainable)
    state = state_lib.fresh(state_lib.random_params(CFG, mesh, jax.random.key(0)), optimizer,
                            abstract, mesh)
    step = make_step(loss_fn or (lambda p, b, f: losses.masked_next_token_loss(p, b, f, CFG)),
                     optimizer, state_lib.state_shardings(abstract, optimizer, mesh), mesh,
                     trainable=trainable, donate=False)
    return state, step


def test_all_zero_mask_gives_loss_zero_and_zero_gradient_not_nan(params):
    b = {**batch(4), "loss_mask": jnp.zeros((B, T), jnp.int32)}
    loss_sum, count, _ = losses.masked_next_token_loss(params, b, None, CFG)
    assert float(loss_sum) == 0.0 and float(count) == 0.0
    loss, grads = loss_and_grad(params, b)
    assert float(loss) == 0.0
    assert all(not np.asarray(g).any() for g in jax.tree.leaves(grads))

    state, step = _step(optax.adam(1e-2), one_device_mesh())
    new_state, metrics = step(state, b)
    assert float(metrics["loss"]) == 0.0 and float(metrics["grad_norm"]) == 0.0
    assert float(metrics["count"]) == 0.0
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(new_state))


def test_grad_accumulation_sums_counts_before_dividing():
    # Microbatches with 0 and with many counted tokens: the loss is the mean over all counted
    # tokens of the batch, not a mean of per-microbatch means.
    mesh = one_device_mesh()
    b = batch(5)
    mask = np.ones((B, T), np.int32)
    mask[1::2] = 0  # with grad_accum=2, microbatch 1 holds rows 1 and 3: nothing counted
    b = {**b, "loss_mask": jnp.asarray(mask)}
    state, step = _step(optax.sgd(0.0), mesh)
    _, full = step(state, b)
    abstract = state_lib.abstract_params(CFG, mesh)
    accum = make_step(lambda p, bb, f: losses.masked_next_token_loss(p, bb, f, CFG),
                      optax.sgd(0.0), state_lib.state_shardings(abstract, optax.sgd(0.0), mesh),
                      mesh, grad_accum=2, donate=False)
    _, split = accum(state, b)
    assert float(split["count"]) == float(full["count"]) == mask.sum()
    np.testing.assert_allclose(float(split["loss"]), float(full["loss"]), rtol=1e-6)


def trainable_mask(params_shape):
    """Only the attention query and MLP up-projection matrices train."""
    def leaf(path, _):
        return any(getattr(k, "key", None) in ("wq", "w_up") for k in path)
    return jax.tree_util.tree_map_with_path(leaf, params_shape)


def test_trainable_mask_leaves_frozen_leaves_bit_for_bit_and_keeps_no_moments_for_them():
    mesh = one_device_mesh()
    shapes = jax.eval_shape(lambda: model.init(CFG, jax.random.key(0)))
    trainable = trainable_mask(shapes)
    assert 0 < sum(jax.tree.leaves(trainable)) < len(jax.tree.leaves(trainable))
    state, step = _step(optax.adamw(1e-2, weight_decay=0.1), mesh, trainable)
    before = jax.device_get(state["params"])
    for seed in range(3):
        state, _ = step(state, batch(10 + seed, mask_fraction=1.0))
    after = jax.device_get(state["params"])
    for t, a, b in zip(jax.tree.leaves(trainable), jax.tree.leaves(before),
                       jax.tree.leaves(after)):
        same = np.array_equal(np.asarray(a).view(np.uint32), np.asarray(b).view(np.uint32))
        assert same != t  # frozen: identical bits; trainable: moved
    # Adam keeps two moments per trainable parameter and none for the frozen ones.
    n_trainable = sum(x.size for t, x in zip(jax.tree.leaves(trainable), jax.tree.leaves(before))
                      if t)
    moments = sum(x.size for x in jax.tree.leaves(state["opt_state"]) if x.ndim > 0)
    assert moments == 2 * n_trainable
