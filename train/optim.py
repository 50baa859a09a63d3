"""The optimizer: AdamW (decoupled weight decay) behind global-norm clipping, with a schedule.

Weight decay skips norm gains and the token embedding unless asked: decaying a gain pulls it to
zero rather than regularising, and rows of rare tokens would shrink just for being rare.
"""

from __future__ import annotations

import jax
import optax

from train.config import OptimConfig

NO_DECAY_KEYS = ("attn_norm", "mlp_norm", "final_norm", "embed")


def schedule(o: OptimConfig, steps: int) -> optax.Schedule:
    """Learning rate as a function of the number of updates already applied."""
    warmup = o.warmup_steps
    end = o.lr * o.min_lr_ratio
    if o.schedule == "cosine":
        return optax.warmup_cosine_decay_schedule(
            init_value=0.0, peak_value=o.lr, warmup_steps=warmup, decay_steps=steps, end_value=end)
    if o.schedule == "constant":
        return optax.join_schedules(
            [optax.linear_schedule(0.0, o.lr, max(warmup, 1)), optax.constant_schedule(o.lr)],
            [warmup])
    # Warmup-stable-decay: hold the peak, then decay linearly over the last decay_fraction.
    decay = max(1, round(o.decay_fraction * steps))
    stable = max(0, steps - warmup - decay)
    return optax.join_schedules(
        [optax.linear_schedule(0.0, o.lr, max(warmup, 1)),
         optax.constant_schedule(o.lr),
         optax.linear_schedule(o.lr, end, decay)],
        [warmup, warmup + stable])


def decay_mask(params, o: OptimConfig):
    """True where weight decay applies: every parameter but norms and the embedding (by default)."""
    def leaf(path, _):
        names = [getattr(k, "key", str(k)) for k in path]
        return o.decay_norms_and_embeddings or not any(n in NO_DECAY_KEYS for n in names)
    return jax.tree_util.tree_map_with_path(leaf, params)


def make_optimizer(o: OptimConfig, steps: int) -> optax.GradientTransformation:
    parts = [optax.clip_by_global_norm(o.clip_norm)] if o.clip_norm > 0 else []
    parts.append(optax.adamw(schedule(o, steps), b1=o.b1, b2=o.b2, eps=o.eps,
                             weight_decay=o.weight_decay, mask=lambda p: decay_mask(p, o)))
    return optax.chain(*parts)
