"""The preference losses (train.preference_losses) on random numbers and a tiny random model."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import model
from train import preference_losses as pl

CFG = model.apply_overrides(model.preset("tiny"), ["vocab_size=64", "max_seq_len=16"])


def _numpy_dpo(pi, ref, beta, eps):
    """Conservative DPO written out with numpy: log sigmoid(x) = -log(1 + exp(-x))."""
    x = beta * ((pi[:, 0] - ref[:, 0]) - (pi[:, 1] - ref[:, 1]))
    logsig = lambda z: -np.logaddexp(0.0, -z)  # noqa: E731
    return -(1 - eps) * logsig(x) - eps * logsig(-x)


@pytest.mark.parametrize("beta,eps", [(0.1, 0.0), (0.5, 0.2), (2.0, 0.45)])
def test_dpo_loss_matches_numpy(beta, eps):
    rng = np.random.default_rng(0)
    pi, ref = rng.normal(-20, 8, (32, 2)), rng.normal(-20, 8, (32, 2))
    valid = (rng.random(32) < 0.8).astype(np.float32)
    loss_sum, count, metrics = pl.dpo_from_logps(jnp.asarray(pi, jnp.float32),
                                                 jnp.asarray(ref, jnp.float32),
                                                 jnp.asarray(valid), beta, eps)
    expected = _numpy_dpo(pi, ref, beta, eps)
    assert float(count) == valid.sum()
    np.testing.assert_allclose(float(loss_sum), (expected * valid).sum(), rtol=1e-5)
    chosen, rejected = beta * (pi[:, 0] - ref[:, 0]), beta * (pi[:, 1] - ref[:, 1])
    np.testing.assert_allclose(float(metrics["margin"]), ((chosen - rejected) * valid).sum(),
                               rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(float(metrics["reward_chosen"]), (chosen * valid).sum(),
                               rtol=1e-4, atol=1e-3)
    assert float(metrics["accuracy"]) == ((chosen > rejected) * valid).sum()
    assert float(metrics["policy_accuracy"]) == ((pi[:, 0] > pi[:, 1]) * valid).sum()


def _pair_batch(seed=0, B=4, T=12, prompt=5):
    """Random pairs: the first `prompt` targets of each row are the prompt (mask 0), the last
    two are padding (mask 0)."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(1, CFG.vocab_size, (B, 2, T + 1)).astype(np.int32)
    mask = np.zeros((B, 2, T), np.int32)
    mask[:, :, prompt:T - 2] = 1
    return {"inputs": tokens[..., :-1], "targets": tokens[..., 1:], "loss_mask": mask,
            "valid": np.ones(B, np.float32), "last": np.full((B, 2), T - 3, np.int32)}


@pytest.fixture(scope="module")
def params():
    return model.init(CFG, jax.random.key(1))


def test_at_step_0_dpo_loss_is_ln2_and_margin_0(params):
    """Policy equal to reference: every pair costs ln 2 and the implicit rewards are 0, with
    the reference as a frozen copy or precomputed into the batch."""
    batch = _pair_batch()
    for eps in (0.0, 0.3):
        loss_sum, count, m = pl.dpo_loss(params, batch, params, cfg=CFG, beta=0.1,
                                         label_smoothing=eps)
        assert abs(float(loss_sum / count) - math.log(2)) < 1e-6
        assert abs(float(m["margin"])) < 1e-6 and float(m["accuracy"] / count) == 0.5
    ref = pl.pair_logps(params, batch, CFG)
    loss_sum, count, m = pl.dpo_loss(params, {**batch, "ref_logps": ref}, None, cfg=CFG,
                                     beta=0.1)
    assert abs(float(loss_sum / count) - math.log(2)) < 1e-6 and abs(float(m["margin"])) < 1e-6


def test_pair_logps_sum_exactly_the_completion_tokens(params):
    """Against log-softmax of the logits read at the masked positions, one row at a time."""
    batch = _pair_batch(seed=3)
    got = np.asarray(pl.pair_logps(params, batch, CFG))
    for b in range(batch["inputs"].shape[0]):
        for a in range(2):
            logits, _ = model.forward(params, batch["inputs"][b, a][None], CFG)
            logp = np.asarray(jax.nn.log_softmax(logits[0], -1))
            want = sum(logp[t, batch["targets"][b, a, t]]
                       for t in np.flatnonzero(batch["loss_mask"][b, a]))
            np.testing.assert_allclose(got[b, a], want, rtol=1e-5)


def test_prompt_and_padding_targets_change_nothing(params):
    """Rewriting every masked target leaves the DPO loss and its gradient bit-identical."""
    batch = _pair_batch(seed=4)
    other = dict(batch, targets=np.where(batch["loss_mask"] == 0,
                                         (batch["targets"] + 7) % CFG.vocab_size,
                                         batch["targets"]))
    ref = jax.tree.map(lambda x: x * 0.9, params)
    grad = jax.value_and_grad(
        lambda p, b: pl.dpo_loss(p, b, ref, cfg=CFG, beta=0.5, label_smoothing=0.1)[0])
    (a, ga), (b, gb) = grad(params, batch), grad(params, other)
    assert np.array_equal(a, b) and float(a) != 0.0
    for x, y in zip(jax.tree.leaves(ga), jax.tree.leaves(gb)):
        assert np.array_equal(x, y)
    changed = dict(batch, targets=(batch["targets"] + 7) % CFG.vocab_size)
    assert not np.array_equal(grad(params, changed)[0], a)  # completion targets do count


def test_hidden_states_are_what_the_logits_are_read_from(params):
    tokens = np.arange(1, 11, dtype=np.int32)[None]
    hidden, _ = model.forward(params, tokens, CFG, return_hidden=True)
    logits, _ = model.forward(params, tokens, CFG)
    unembed = params["embed"].T if CFG.tie_embeddings else params["unembed"]
    assert hidden.shape == (1, 10, CFG.d_model) and hidden.dtype == jnp.float32
    np.testing.assert_allclose(hidden @ unembed, logits, rtol=1e-5, atol=1e-5)


def test_reward_reads_the_last_real_token(params):
    """The reward is the hidden state at `last` dotted with the head: tokens after it (padding)
    change nothing, and a zero head is chance (loss ln 2, accuracy one half)."""
    batch = _pair_batch(seed=5)
    rng = np.random.default_rng(0)
    head = jnp.asarray(rng.normal(size=CFG.d_model), jnp.float32)
    rm = {**params, pl.HEAD: head}
    r = np.asarray(pl.pair_rewards(rm, batch, CFG))
    hidden, _ = model.forward(params, batch["inputs"][1, 0][None], CFG, return_hidden=True)
    np.testing.assert_allclose(r[1, 0], float(hidden[0, batch["last"][1, 0]] @ head), rtol=1e-5)
    inputs = batch["inputs"].copy()
    inputs[..., batch["last"][0, 0] + 1:] = 3
    np.testing.assert_allclose(pl.pair_rewards(rm, dict(batch, inputs=inputs), CFG), r,
                               rtol=1e-6)
    zero = {**params, pl.HEAD: jnp.zeros(CFG.d_model)}
    loss_sum, count, m = pl.reward_loss(zero, batch, None, cfg=CFG)
    assert abs(float(loss_sum / count) - math.log(2)) < 1e-6
    assert float(m["accuracy"] / count) == 0.5


def test_bradley_terry_matches_numpy():
    rng = np.random.default_rng(2)
    r = rng.normal(0, 3, (16, 2))
    valid = np.ones(16)
    valid[-3:] = 0
    loss_sum, count, m = pl.bradley_terry_from_rewards(jnp.asarray(r, jnp.float32),
                                                       jnp.asarray(valid))
    expected = np.logaddexp(0.0, -(r[:, 0] - r[:, 1]))
    np.testing.assert_allclose(float(loss_sum), (expected * valid).sum(), rtol=1e-5)
    assert float(count) == 13 and float(m["accuracy"]) == ((r[:, 0] > r[:, 1]) * valid).sum()


def test_rpo_adds_alpha_times_the_chosen_answers_mean_token_nll(params):
    """RPO (TRL's rpo_alpha): each pair's DPO loss plus alpha times the chosen answer's NLL
    per completion token, written out here from log-softmax of the logits."""
    batch = _pair_batch(seed=6)
    ref = jax.tree.map(lambda x: x * 0.9, params)
    beta, alpha = 0.5, 0.7

    def answer_logp(p, b, a):
        logits, _ = model.forward(p, batch["inputs"][b, a][None], CFG)
        logp = np.asarray(jax.nn.log_softmax(logits[0], -1))
        picked = [logp[t, batch["targets"][b, a, t]]
                  for t in np.flatnonzero(batch["loss_mask"][b, a])]
        return sum(picked), len(picked)

    B = batch["inputs"].shape[0]
    pi = np.array([[answer_logp(params, b, a)[0] for a in range(2)] for b in range(B)])
    rf = np.array([[answer_logp(ref, b, a)[0] for a in range(2)] for b in range(B)])
    n_chosen = np.array([answer_logp(params, b, 0)[1] for b in range(B)])
    want = _numpy_dpo(pi, rf, beta, 0.0) + alpha * (-pi[:, 0] / n_chosen)
    loss_sum, count, m = pl.dpo_loss(params, batch, ref, cfg=CFG, beta=beta, rpo_alpha=alpha)
    np.testing.assert_allclose(float(loss_sum), want.sum(), rtol=1e-5)
    np.testing.assert_allclose(float(m["chosen_nll"]), (-pi[:, 0] / n_chosen).sum(), rtol=1e-5)
    plain, _, m0 = pl.dpo_loss(params, batch, ref, cfg=CFG, beta=beta)
    np.testing.assert_allclose(float(plain), _numpy_dpo(pi, rf, beta, 0.0).sum(), rtol=1e-5)
    assert "chosen_nll" not in m0


def test_a_zero_reward_head_gives_the_body_no_gradient_a_random_one_does(params):
    """Why rm.head_init_std exists: the body's gradient flows through the head, so a zero head
    leaves every body parameter's gradient exactly 0 at step 0."""
    import dataclasses

    from train import config as train_config
    from train import rm

    batch = _pair_batch(seed=7)
    cfg = train_config.load("rm")
    cfg = dataclasses.replace(cfg, model=CFG)
    zero = rm.initial_head(cfg)
    assert not zero.any()
    rand = rm.initial_head(dataclasses.replace(cfg, rm=dataclasses.replace(cfg.rm,
                                                                           head_init_std=0.05)))
    assert rand.shape == (CFG.d_model,) and 0.03 < rand.std() < 0.07

    def body_grad(head):
        g = jax.grad(lambda p: pl.reward_loss(p, batch, None, cfg=CFG)[0])(
            {**params, pl.HEAD: jnp.asarray(head)})
        g = dict(g)
        del g[pl.HEAD]
        return max(float(jnp.abs(x).max()) for x in jax.tree.leaves(g))

    assert body_grad(zero) == 0.0
    assert body_grad(rand) > 1e-4
