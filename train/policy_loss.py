"""Policy gradient with group-relative advantages (the GRPO family), as pure functions.

A prompt is sampled G times; each completion's advantage is its reward against its own group
(`group_advantages`), so no value model is needed. The loss per completion token t is

    ratio_t = exp(logp_t - old_logp_t)             # against the policy that sampled the batch
    pg_t    = -min(ratio_t * A, clip(ratio_t, 1 - eps_clip, 1 + eps_clip) * A)
    kl_t    = exp(ref_t - logp_t) - (ref_t - logp_t) - 1      # k3, >= 0, unbiased for KL(pi||ref)
    loss    = sum_t mask_t * (pg_t + beta_kl * kl_t)  /  sum_t mask_t

summed over every completion token of the batch and divided by their count (the step divides
by the count returned here): the token-level aggregation of DAPO and Dr. GRPO, so a long
completion is not down-weighted per token, and padding (mask 0) changes nothing. On the first
update of a batch old_logp equals logp, the ratio is 1 and the gradient is -A * grad logp; the
clip only acts when a batch of rollouts is reused for more updates (rl.updates_per_batch).
The definitions follow TRL's GRPOTrainer (advantage std with Bessel's correction plus 1e-4,
k3 per token, loss_type "dapo") and Tunix's GRPO learner.

Batch (arrays, [B] rows = prompts x G, [B, T] tokens): "inputs", "targets", "loss_mask"
(1 on sampled completion tokens: prompt, padding and tool-forced tokens are 0), "advantages"
[B], "old_logp" [B, T]; and for the logged rollout statistics "reward", "zero_advantage"
(1 where the row's group has all-equal rewards), "length" (completion tokens) and
"row_weight" (the batch's mask total / B, see `rollout_metric_sums`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

import model

ADVANTAGE_EPS = 1e-4  # TRL's: advantages / (std + 1e-4)


def group_advantages(rewards_PG, *, scale_by_std: bool) -> jax.Array:
    """float32 [P, G] advantages of G completions of each of P prompts: reward minus the group's
    mean, divided by the group's standard deviation (ddof 1) + 1e-4 when `scale_by_std`.
    A group whose rewards are all equal has advantage exactly 0 (a float mean of equal values
    need not equal them, and 0 / eps would not be 0)."""
    r_PG = jnp.asarray(rewards_PG, jnp.float32)
    centred_PG = r_PG - r_PG.mean(axis=1, keepdims=True)
    if scale_by_std:
        centred_PG = centred_PG / (r_PG.std(axis=1, ddof=1, keepdims=True) + ADVANTAGE_EPS)
    equal_P1 = jnp.all(r_PG == r_PG[:, :1], axis=1, keepdims=True)
    return jnp.where(equal_P1, 0.0, centred_PG)


def token_log_probs(logits_BTV, targets_BT, temperature: float) -> tuple[jax.Array, jax.Array]:
    """(log-probability of each target, entropy of each position) under softmax(logits / T),
    float32 [B, T]: the distribution the engine samples from at temperature T."""
    logp_BTV = jax.nn.log_softmax(logits_BTV.astype(jnp.float32) / temperature, axis=-1)
    logp_BT = jnp.take_along_axis(logp_BTV, targets_BT[..., None], axis=-1)[..., 0]
    entropy_BT = -jnp.sum(jnp.exp(logp_BTV) * logp_BTV, axis=-1)
    return logp_BT, entropy_BT


def policy_log_probs(params, batch: dict, mcfg: model.ModelConfig, temperature: float):
    """(logp [B, T], entropy [B, T]) of the batch's targets under `params`."""
    logits_BTV, _ = model.forward(params, batch["inputs"], mcfg)
    return token_log_probs(logits_BTV, batch["targets"], temperature)


def clipped_objective(logp_BT, old_logp_BT, advantages_B, eps_clip: float):
    """(per-token policy-gradient loss, where the clip is active) [B, T]."""
    ratio_BT = jnp.exp(logp_BT - old_logp_BT)
    a_B1 = advantages_B[:, None]
    unclipped_BT = ratio_BT * a_B1
    clipped_BT = jnp.clip(ratio_BT, 1.0 - eps_clip, 1.0 + eps_clip) * a_B1
    return -jnp.minimum(unclipped_BT, clipped_BT), clipped_BT < unclipped_BT


def k3_kl(logp_BT, ref_logp_BT) -> jax.Array:
    """Per-token k3 estimate of KL(policy || reference): exp(d) - d - 1, d = ref - logp."""
    d_BT = ref_logp_BT - logp_BT
    return jnp.exp(d_BT) - d_BT - 1.0


def rollout_metric_sums(batch: dict) -> dict:
    """Per-row statistics as sums the step's division by the token count turns into row means:
    each row carries row_weight = (the whole batch's token count) / B, so this holds for any
    split into microbatches."""
    w_B = batch["row_weight"]
    return {name: jnp.sum(batch[key] * w_B) for name, key in
            (("reward", "reward"), ("zero_adv_groups", "zero_advantage"),
             ("response_length", "length"))}


def grpo_loss(params, batch: dict, frozen, *, mcfg: model.ModelConfig, temperature: float,
              eps_clip: float, beta_kl: float):
    """The loop's `loss_fn(params, batch, frozen) -> (loss_sum, count, metric sums)`; `frozen`
    is the reference's parameters (KL to it is logged, and added to the loss times beta_kl),
    or None: no reference, no KL."""
    mask_BT = batch["loss_mask"].astype(jnp.float32)
    on_BT = mask_BT != 0
    logp_BT, entropy_BT = policy_log_probs(params, batch, mcfg, temperature)
    pg_BT, clipped_BT = clipped_objective(logp_BT, batch["old_logp"], batch["advantages"],
                                          eps_clip)
    per_token_BT = pg_BT
    metrics = {}
    if frozen is not None:  # the reference: KL is logged, and penalised when beta_kl > 0
        ref_logp_BT, _ = policy_log_probs(frozen, batch, mcfg, temperature)
        kl_BT = k3_kl(logp_BT, jax.lax.stop_gradient(ref_logp_BT))
        if beta_kl:
            per_token_BT = per_token_BT + beta_kl * kl_BT
        metrics["kl"] = jnp.where(on_BT, jax.lax.stop_gradient(kl_BT) * mask_BT, 0.0).sum()
    # where(), not a product alone: a masked position's value never enters, even if inf or NaN.
    loss_sum = jnp.where(on_BT, per_token_BT * mask_BT, 0.0).sum()
    metrics["entropy"] = jnp.where(on_BT, jax.lax.stop_gradient(entropy_BT) * mask_BT, 0.0).sum()
    metrics["clip_fraction"] = jnp.where(on_BT & clipped_BT, mask_BT, 0.0).sum()
    metrics.update(rollout_metric_sums(batch))
    return loss_sum, mask_BT.sum(), metrics
