"""Losses on preference pairs: DPO and the reward model's Bradley-Terry loss.

Both follow the one step's convention (train.losses): `loss_fn(params, batch, frozen) ->
(loss_sum, count, metrics)` with sums, the step dividing by max(count, 1); here the count is
the number of real pairs. A pair batch holds both answers of each pair side by side, so the
batch is split over devices and microbatches by pair and a pair is never torn apart:

    inputs, targets, loss_mask: int32 [B, 2, T]  (index 0 the chosen answer, 1 the rejected)
    valid: [B]  1 for a real pair, 0 for a row that only fills the last batch of an epoch
    ref_logps: float32 [B, 2]  DPO with a precomputed reference only
    last: int32 [B, 2]  the reward model only: index of the conversation's last real token

`loss_mask` is 1 on the targets of the final assistant message (what the preference is about)
and 0 on the prompt and the padding.

Accuracies count a tie as one half, so a model that cannot tell the two answers apart (DPO at
step 0, a zero reward head) scores chance, 0.5, rather than 0.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

import model
from evals import reward_model
from train.losses import token_losses


def _pairs_as_rows(x_B2T: jax.Array) -> jax.Array:
    return x_B2T.reshape(-1, x_B2T.shape[-1])


def pair_logps(params, batch: dict, cfg: model.ModelConfig) -> jax.Array:
    """Summed log-probability [B, 2] of each answer's masked targets (completion tokens only).
    A masked target is replaced by token 0 before the forward and weighted 0 after, so prompt
    and padding targets never reach the value or its gradient."""
    mask_B2T = batch["loss_mask"].astype(jnp.float32)
    targets_B2T = jnp.where(mask_B2T != 0, batch["targets"], 0)
    nll_NT = token_losses(params, _pairs_as_rows(batch["inputs"]), _pairs_as_rows(targets_B2T),
                          cfg)
    nll_B2T = nll_NT.reshape(mask_B2T.shape)
    return -jnp.where(mask_B2T != 0, nll_B2T * mask_B2T, 0.0).sum(-1)


def _win_rate(margin_B: jax.Array) -> jax.Array:
    """1 where the chosen answer wins, 0.5 on a tie, 0 where it loses."""
    return (jnp.sign(margin_B) + 1.0) / 2.0


def dpo_from_logps(pi_B2: jax.Array, ref_B2: jax.Array, valid_B: jax.Array, beta: float,
                   label_smoothing: float = 0.0, rpo_alpha: float = 0.0,
                   chosen_tokens_B: jax.Array | None = None):
    """The DPO loss of Rafailov et al. (2023) with the label smoothing of conservative DPO
    (Mitchell 2023; TRL's "sigmoid" loss): with x = beta * ((pi_c - ref_c) - (pi_r - ref_r)),
    each pair costs (1 - eps) * -log sigmoid(x) + eps * -log sigmoid(-x).

    rpo_alpha > 0 adds RPO's term (Pang et al. 2024, "iterative reasoning preference
    optimisation"; TRL's rpo_alpha): alpha times the chosen answer's mean token NLL,
    -pi_c / chosen_tokens. TRL averages that NLL over all the batch's chosen tokens; here it
    is averaged per pair, so that a batch split over devices or microbatches sums to the same
    loss (the two agree when the answers are equally long, as the pipeline's nearly are). It
    keeps pulling the chosen answer up once a pair is won, when DPO's loss alone no longer
    cares which way the two answers move.

    Returns (loss summed over valid pairs, number of valid pairs, metric sums): the implicit
    rewards beta * (pi - ref) of the chosen and rejected answers, their margin, the preference
    accuracy (the implicit reward prefers the chosen answer), and policy_accuracy (the policy's
    own log-probability prefers it, whatever the reference thinks).
    """
    valid_B = valid_B.astype(jnp.float32)
    rewards_B2 = beta * (pi_B2 - jax.lax.stop_gradient(ref_B2))
    margin_B = rewards_B2[:, 0] - rewards_B2[:, 1]
    losses_B = (-(1.0 - label_smoothing) * jax.nn.log_sigmoid(margin_B)
                - label_smoothing * jax.nn.log_sigmoid(-margin_B))
    total = lambda x_B: jnp.where(valid_B != 0, x_B * valid_B, 0.0).sum()  # noqa: E731
    extra = {}
    if rpo_alpha:
        if chosen_tokens_B is None:
            raise ValueError("rpo_alpha > 0 needs chosen_tokens_B, the chosen answers' lengths")
        nll_B = -pi_B2[:, 0] / jnp.maximum(chosen_tokens_B.astype(jnp.float32), 1.0)
        losses_B = losses_B + rpo_alpha * nll_B
        extra["chosen_nll"] = total(jax.lax.stop_gradient(nll_B))
    rewards_B2 = jax.lax.stop_gradient(rewards_B2)
    metrics = {"reward_chosen": total(rewards_B2[:, 0]),
               "reward_rejected": total(rewards_B2[:, 1]),
               "margin": total(rewards_B2[:, 0] - rewards_B2[:, 1]),
               "accuracy": total(_win_rate(rewards_B2[:, 0] - rewards_B2[:, 1])),
               "policy_accuracy": total(_win_rate(jax.lax.stop_gradient(pi_B2[:, 0] -
                                                                        pi_B2[:, 1]))),
               **extra}
    return total(losses_B), valid_B.sum(), metrics


def dpo_loss(params, batch: dict, frozen, *, cfg: model.ModelConfig, beta: float,
             label_smoothing: float = 0.0, rpo_alpha: float = 0.0):
    """DPO on a pair batch. `frozen`: the reference model's parameters (a frozen copy of the
    starting point), or None when the batch carries the reference's log-probabilities,
    computed once before training ("ref_logps")."""
    pi_B2 = pair_logps(params, batch, cfg)
    if frozen is None:
        ref_B2 = batch["ref_logps"]
    else:
        ref_B2 = pair_logps(frozen, batch, cfg)
    chosen_tokens_B = batch["loss_mask"][:, 0].sum(-1)
    return dpo_from_logps(pi_B2, ref_B2, batch["valid"], beta, label_smoothing, rpo_alpha,
                          chosen_tokens_B)


# The reward model: the language model's parameters plus one vector read at the last token
# (evals.reward_model, so that scoring with a trained one needs no trainer).
HEAD = reward_model.HEAD


def pair_rewards(params, batch: dict, cfg: model.ModelConfig) -> jax.Array:
    """Scalar rewards [B, 2]: the final-normed hidden state at each conversation's last real
    token, dotted with params["reward_head"] [D]."""
    rewards_N = reward_model.last_token_rewards(params, _pairs_as_rows(batch["inputs"]),
                                                batch["last"].reshape(-1), cfg)
    return rewards_N.reshape(batch["last"].shape)


def bradley_terry_from_rewards(r_B2: jax.Array, valid_B: jax.Array):
    """-log sigmoid(r_c - r_r) summed over valid pairs, their count, and metric sums: pair
    accuracy, the mean rewards of both answers and their margin."""
    valid_B = valid_B.astype(jnp.float32)
    margin_B = r_B2[:, 0] - r_B2[:, 1]
    total = lambda x_B: jnp.where(valid_B != 0, x_B * valid_B, 0.0).sum()  # noqa: E731
    fixed_B2 = jax.lax.stop_gradient(r_B2)
    metrics = {"accuracy": total(_win_rate(fixed_B2[:, 0] - fixed_B2[:, 1])),
               "reward_chosen": total(fixed_B2[:, 0]), "reward_rejected": total(fixed_B2[:, 1]),
               "margin": total(fixed_B2[:, 0] - fixed_B2[:, 1])}
    return total(-jax.nn.log_sigmoid(margin_B)), valid_B.sum(), metrics


def reward_loss(params, batch: dict, frozen, *, cfg: model.ModelConfig):
    """The reward model's Bradley-Terry loss on a pair batch (`frozen` unused)."""
    del frozen
    return bradley_terry_from_rewards(pair_rewards(params, batch, cfg), batch["valid"])
