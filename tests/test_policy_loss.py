"""The GRPO-family loss (train.policy_loss): advantages, zero gradients, the direction of one
update, token-level aggregation under padding, the clip and the k3 estimator."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import model
from train import policy_loss

CFG = model.apply_overrides(model.preset("tiny"), ["vocab_size=64", "max_seq_len=16"])
PROMPT_LEN, T = 4, 10


@pytest.fixture(scope="module")
def params():
    return model.init(CFG, jax.random.key(0))


def rollouts(rewards_PG, seed=0, T=T):
    """A batch of P x G rows: a shared prompt per group, random completions after it."""
    rewards_PG = np.asarray(rewards_PG, np.float32)
    P, G = rewards_PG.shape
    rng = np.random.default_rng(seed)
    rows = rng.integers(1, CFG.vocab_size, (P * G, T + 1)).astype(np.int32)
    for p in range(P):
        rows[p * G:(p + 1) * G, :PROMPT_LEN] = rows[p * G, :PROMPT_LEN]
    mask = np.zeros((P * G, T), np.float32)
    mask[:, PROMPT_LEN - 1:] = 1.0  # targets from the first completion token on
    B = P * G
    batch = {"inputs": rows[:, :-1], "targets": rows[:, 1:], "loss_mask": mask,
             "advantages": np.asarray(policy_loss.group_advantages(rewards_PG, scale_by_std=True)
                                      ).reshape(B),
             "reward": rewards_PG.reshape(B), "length": mask.sum(1),
             "zero_advantage": np.zeros(B, np.float32),
             "row_weight": np.full(B, mask.sum() / B, np.float32)}
    return with_old_logp(batch)


def with_old_logp(batch, p=None):
    p = model.init(CFG, jax.random.key(0)) if p is None else p
    logp, _ = policy_loss.policy_log_probs(p, batch, CFG, 1.0)
    return {**batch, "old_logp": np.asarray(logp)}


def loss_fn(batch_params, batch, frozen=None, eps_clip=0.2, beta_kl=0.0):
    return policy_loss.grpo_loss(batch_params, batch, frozen, mcfg=CFG, temperature=1.0,
                                 eps_clip=eps_clip, beta_kl=beta_kl)


def grad_of(params, batch, **kw):
    return jax.grad(lambda p: loss_fn(p, batch, **kw)[0])(params)


def test_advantages_are_centred_and_scaled_by_the_groups_std():
    adv = np.asarray(policy_loss.group_advantages([[1.0, 0.0, 0.0, 1.0], [3.0, 1.0, 2.0, 2.0]],
                                                  scale_by_std=True))
    std0 = math.sqrt((4 * 0.25) / 3)  # Bessel's correction, as torch.std
    std1 = math.sqrt(2 / 3)
    np.testing.assert_allclose(adv[0], np.array([0.5, -0.5, -0.5, 0.5]) / (std0 + 1e-4), rtol=1e-6)
    np.testing.assert_allclose(adv[1], np.array([1.0, -1.0, 0.0, 0.0]) / (std1 + 1e-4), rtol=1e-6)
    raw = np.asarray(policy_loss.group_advantages([[3.0, 1.0, 2.0, 2.0]], scale_by_std=False))
    np.testing.assert_array_equal(raw, [[1.0, -1.0, 0.0, 0.0]])


def test_equal_rewards_give_exactly_zero_advantage():
    # 0.1 * 3 / 3 is not 0.1 in floating point: the centring alone would leave tiny advantages.
    adv = np.asarray(policy_loss.group_advantages([[0.1, 0.1, 0.1], [1.0, 1.0, 1.0]],
                                                  scale_by_std=True))
    assert (adv == 0.0).all()


def test_a_group_of_equal_rewards_gives_an_exactly_zero_gradient(params):
    batch = rollouts([[0.1, 0.1, 0.1, 0.1]])
    for g in jax.tree.leaves(grad_of(params, batch)):
        assert not np.any(np.asarray(g)), "an all-equal group must not move the policy"


def test_one_update_raises_positive_and_lowers_negative_completions(params):
    batch = rollouts([[1.0, 0.0, 1.0, 0.0]], seed=3)
    grads = grad_of(params, batch)
    new = jax.tree.map(lambda p, g: p - 0.05 * g, params, grads)

    def seq_logp(p):
        logp, _ = policy_loss.policy_log_probs(p, batch, CFG, 1.0)
        return np.asarray((logp * batch["loss_mask"]).sum(1))

    change = seq_logp(new) - seq_logp(params)
    assert change[0] > 0 and change[2] > 0, change
    assert change[1] < 0 and change[3] < 0, change


def test_padding_does_not_change_the_token_level_loss(params):
    batch = rollouts([[1.0, 0.0, 0.5, 0.0]], seed=1)
    B = batch["inputs"].shape[0]
    extra = 5
    rng = np.random.default_rng(9)

    def pad_cols(x, value):
        return np.concatenate([x, np.full((B, extra), value, x.dtype)], axis=1)

    padded = {**batch,
              "inputs": pad_cols(batch["inputs"], 7), "targets": pad_cols(batch["targets"], 9),
              "loss_mask": pad_cols(batch["loss_mask"], 0.0),
              "old_logp": pad_cols(batch["old_logp"], 0.0)}
    # And a whole padding row with a large advantage: its mask is all zero.
    padded = {k: np.concatenate([v, v[:1] if k not in ("inputs", "targets") else
                                 rng.integers(1, 64, v[:1].shape).astype(v.dtype)])
              for k, v in padded.items()}
    padded["loss_mask"][-1] = 0.0
    padded["advantages"][-1] = 100.0
    (l1, n1, _), (l2, n2, _) = loss_fn(params, batch), loss_fn(params, padded)
    assert float(n1) == float(n2) == batch["loss_mask"].sum()
    np.testing.assert_allclose(float(l2), float(l1), atol=1e-5)  # ~0: advantages sum to 0
    for a, b in zip(jax.tree.leaves(grad_of(params, batch)),
                    jax.tree.leaves(grad_of(params, padded))):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-4, atol=1e-6)


def test_long_completions_weigh_per_token_not_per_sequence():
    """Token-level aggregation: the loss is the mean over all tokens of the batch."""
    logp = jnp.log(jnp.full((2, 4), 0.5))
    adv = jnp.array([1.0, -1.0])
    pg, _ = policy_loss.clipped_objective(logp, logp, adv, 0.2)
    mask = jnp.array([[1.0, 1.0, 1.0, 1.0], [1.0, 0.0, 0.0, 0.0]])
    # Four tokens of advantage 1, one of -1: (-4 + 1) / 5 (a per-sequence mean would give 0).
    assert float((pg * mask).sum() / mask.sum()) == pytest.approx(-3 / 5)


def test_the_clip_stops_the_gradient_once_the_ratio_left_the_band(params):
    batch = rollouts([[1.0, 0.0, 1.0, 0.0]], seed=2)
    # The policy already made every sampled token e times likelier than the sampler did.
    moved = {**batch, "old_logp": batch["old_logp"] - 1.0}
    positive_only = {**moved, "advantages": np.where(moved["advantages"] > 0,
                                                     moved["advantages"], 0.0)}
    for g in jax.tree.leaves(grad_of(params, positive_only)):
        assert not np.any(np.asarray(g))
    _, count, metrics = loss_fn(params, moved)
    # Positive rows are clipped (ratio > 1 + eps); negative ones keep the unclipped term.
    assert float(metrics["clip_fraction"] / count) == pytest.approx(0.5)


def test_k3_is_zero_at_the_reference_and_positive_elsewhere():
    logp = jnp.log(jnp.array([0.2, 0.5, 0.9]))
    assert np.all(np.asarray(policy_loss.k3_kl(logp, logp)) == 0.0)
    ref = jnp.log(jnp.array([0.4, 0.1, 0.9]))
    d = np.log([0.4, 0.1, 0.9]) - np.log([0.2, 0.5, 0.9])
    np.testing.assert_allclose(np.asarray(policy_loss.k3_kl(logp, ref)),
                               np.exp(d) - d - 1, rtol=1e-5, atol=1e-7)


def test_kl_penalty_pulls_toward_the_reference(params):
    batch = rollouts([[0.5, 0.5, 0.5, 0.5]], seed=4)  # no policy gradient: only the KL term
    ref = model.init(CFG, jax.random.key(1))
    _, count, m = loss_fn(params, batch, frozen=ref, beta_kl=0.1)
    assert float(m["kl"]) > 0
    grads = grad_of(params, batch, frozen=ref, beta_kl=0.1)
    new = jax.tree.map(lambda p, g: p - 0.05 * g, params, grads)
    _, _, m_new = loss_fn(new, batch, frozen=ref, beta_kl=0.1)
    assert float(m_new["kl"]) < float(m["kl"])
    _, _, m_self = loss_fn(params, batch, frozen=params)
    assert float(m_self["kl"]) == 0.0


def test_logged_rollout_statistics_are_row_means(params):
    batch = rollouts([[1.0, 0.0, 0.0, 0.0], [0.5, 0.5, 0.5, 0.5]], seed=5)
    batch["zero_advantage"] = np.array([0, 0, 0, 0, 1, 1, 1, 1], np.float32)
    batch["loss_mask"][0, -3:] = 0.0  # one shorter completion
    batch["length"] = batch["loss_mask"].sum(1)
    batch["row_weight"] = np.full(8, batch["loss_mask"].sum() / 8, np.float32)
    _, count, m = loss_fn(params, batch)
    assert float(m["reward"] / count) == pytest.approx((1.0 + 4 * 0.5) / 8, rel=1e-6)
    assert float(m["zero_adv_groups"] / count) == pytest.approx(0.5)
    assert float(m["response_length"] / count) == pytest.approx((7 * 7 + 4) / 8, rel=1e-6)
