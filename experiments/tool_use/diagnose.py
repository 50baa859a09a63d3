"""The swapped-prompt test: does a model copy the question's operands into its calculator call?

    swapped_prompt_nll(infer.load("runs/tool_use/sft_tool"), n=64)
    # {"true_nll": ..., "swapped_nll": ..., ...}: nats per call, true prompt vs another's

For each held-out problem the call "<|tool_call_start|>{... "expression": "4817 * 293"}...
<|tool_call_end|><|assistant_end|>" is scored twice: after its own question, and after the next
problem's question (same digits, so the same length and positions). Only the operands in the
call depend on the prompt. A model that copies them finds the call far less likely after the
wrong question; a model that writes a memorised expression scores both alike, which is what the
one-layer demo model did (it wrote "9992 * 411" for every question).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from evals.tasks import arithmetic
from infer.chat.render import render
from train import losses


def _call_turn(model, prompt: list[dict], worked: list[dict]) -> tuple[list[int], list[int]]:
    """Ids up to the end of the call's turn, and the mask of the call's tokens."""
    ids, mask = render(model.tokenizer, prompt + worked)
    start = mask.index(1)
    # The turn ends where the mask first drops (or with the conversation).
    end = next((i for i in range(start, len(mask)) if not mask[i]), len(mask))
    return ids[:end], mask[:end]


def _nll_per_row(model, rows: list[tuple[list[int], list[int]]]) -> np.ndarray:
    ids_BT = jnp.asarray([r[0] for r in rows], jnp.int32)
    mask_BT = jnp.asarray([r[1] for r in rows], jnp.float32)[:, 1:]
    nll_BT = losses.token_losses(model.params, ids_BT[:, :-1], ids_BT[:, 1:], model.config)
    return np.asarray((nll_BT * mask_BT).sum(axis=1))


def swapped_prompt_nll(model, *, n: int = 64, seed: int = 0, digits=(4, 3), ops="*") -> dict:
    """Mean NLL (nats) of the call after its own question and after the next one's."""
    problems = arithmetic.problems(n, seed=seed, digits=digits, ops=ops, stream="held_out")
    true, swapped = [], []
    for i, p in enumerate(problems):
        worked = arithmetic.conversation(p, tool=True)[1:2]  # the assistant's call
        other = problems[(i + 1) % n]
        true.append(_call_turn(model, [{"role": "user", "content": p.prompt}], worked))
        swapped.append(_call_turn(model, [{"role": "user", "content": other.prompt}], worked))
    t_N, s_N = _nll_per_row(model, true), _nll_per_row(model, swapped)
    return {"n": n, "true_nll": float(t_N.mean()), "swapped_nll": float(s_N.mean()),
            "swapped_minus_true": float((s_N - t_N).mean()),
            "rows_swapped_worse": int((s_N > t_N).sum()), "unit": "nats per call (summed over "
            "the call's tokens, its end-of-turn included)"}
