"""A trained reward model as a verifier: rewards of whole conversations from a `train rm` run.

    rm = reward_model.load("runs/quill-rm")          # a run directory or OUT/checkpoints/<step>
    rm.score([prompt + [{"role": "assistant", "content": "12 + 7 = 19."}], ...])   # array [N]

A reward model is its base's parameters plus one vector `reward_head` [D]; the reward is the
final-normed hidden state at the conversation's last token dotted with it. The reading lives
here, below train, so that best-of-n (evals.curve) can use a reward model without the trainer;
train.preference_losses trains the head through this same function.
"""

from __future__ import annotations

import dataclasses
import functools
import os

import jax
import jax.numpy as jnp
import numpy as np

import model

HEAD = "reward_head"
BUCKET = 64  # rows are padded to a multiple of this, so few lengths compile


def last_token_rewards(params, inputs_NT: jax.Array, last_N: jax.Array,
                       cfg: model.ModelConfig) -> jax.Array:
    """Rewards [N]: the final-normed hidden state at index last_N of each row, dotted with
    params["reward_head"]. Tokens after `last` (right padding) cannot reach it: attention is
    causal."""
    hidden_NTD, _ = model.forward(params, inputs_NT, cfg, return_hidden=True)
    at_last_ND = jnp.take_along_axis(hidden_NTD, last_N[:, None, None], axis=1)[:, 0]
    return at_last_ND @ params[HEAD].astype(jnp.float32)


@functools.partial(jax.jit, static_argnames="cfg")
def _rewards(params, inputs_NT, last_N, cfg):
    return last_token_rewards(params, inputs_NT, last_N, cfg)


@dataclasses.dataclass
class RewardModel:
    params: dict
    config: model.ModelConfig
    source: object  # the base as infer.load gives it: its tokenizer and chat template
    path: str

    def score(self, conversations: list[list[dict]], batch_size: int = 8) -> np.ndarray:
        """Rewards [N] of whole conversations, each ending with the answer to score."""
        from infer.chat.render import render

        rendered = [render(self.source, messages)[0] for messages in conversations]
        too_long = [len(ids) for ids in rendered if len(ids) > self.config.max_seq_len]
        if too_long:
            raise ValueError(f"a conversation of {max(too_long)} tokens is longer than the "
                             f"reward model's context ({self.config.max_seq_len}); shorten it")
        out = []
        for start in range(0, len(rendered), batch_size):
            chunk = rendered[start:start + batch_size]
            T = min(-(-max(map(len, chunk)) // BUCKET) * BUCKET, self.config.max_seq_len)
            inputs_NT = np.zeros((batch_size, T), np.int32)  # a full batch: one shape per T
            last_N = np.zeros(batch_size, np.int32)
            for i, ids in enumerate(chunk):
                inputs_NT[i, :len(ids)], last_N[i] = ids, len(ids) - 1
            rewards_N = _rewards(self.params, inputs_NT, last_N, self.config)
            out.extend(np.asarray(rewards_N)[:len(chunk)].tolist())
        return np.asarray(out, np.float64)


def load(run: str | os.PathLike) -> RewardModel:
    """The reward model of a `python -m train rm` run (its latest checkpoint) or checkpoint."""
    import infer
    from infer.formats import run_checkpoint

    cfg, params, _, meta = run_checkpoint.load_params(run)
    if HEAD not in params:
        raise ValueError(f"{run} is not a reward model run (its parameters have no {HEAD}); "
                         "train one with python -m train rm")
    return RewardModel(params=params, config=cfg, source=infer.load(meta["base"]),
                       path=str(run))
