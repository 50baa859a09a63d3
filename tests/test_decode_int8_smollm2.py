"""int8 inference of SmolLM2-135M-Instruct (its GGUF, dequantised) against float32: the same
model's logits with every matrix rounded to int8 per output row, activations rounded to int8 in
blocks of 32 for prompts of 32 tokens or more (prefill), and a float16 KV cache, stay close to
the float32 reference (itself checked against transformers in test_gguf_smollm2)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from infer.runtime import decode_model
from infer.runtime import engine
from tests.test_gguf_smollm2 import PROMPTS, gguf_path, ours  # noqa: F401 (fixtures)


def _logits(params, cfg, ids, int8):
    cache = decode_model.init_cache(cfg, 1, len(ids),
                                    jnp.float16 if int8 else jnp.float32)
    fn = jax.jit(lambda p, t, c: decode_model.forward(p, t, cfg, c, int8=int8,
                                                      empty_cache=True)[0])
    return np.asarray(fn(params, jnp.asarray([ids]), cache)[0])


def _compare(q8, cfg, sequences):
    worst, agree, total = 0.0, 0, 0
    for ids in sequences:
        exact_TV, approx_TV = _logits(q8, cfg, ids, False), _logits(q8, cfg, ids, True)
        worst = max(worst, float(np.abs(approx_TV - exact_TV).max()))
        agree += int((approx_TV.argmax(-1) == exact_TV.argmax(-1)).sum())
        total += len(ids)
    return worst, agree, total


@pytest.mark.slow
def test_int8_logits_stay_close_to_float32(ours):
    cfg = ours.config
    q8 = decode_model.prepare(ours.params, cfg, "int8")
    prompts = [engine.prompt_ids(ours, p) for p in PROMPTS]
    short = [ids[:decode_model.DYNAMIC_MIN_ROWS - 1] for ids in prompts]  # float32 activations
    long = [sum(prompts, []) * 2]  # one prompt of 32 tokens or more: int8 activations too
    assert len(long[0]) >= decode_model.DYNAMIC_MIN_ROWS
    # Measured: 1.63 and 68/69 (short prompts); 2.21 and 143/144 (a 144-token prompt).
    for name, sequences, max_diff, min_agree in (("int8 weights", short, 2.5, 0.95),
                                                 ("int8 weights and activations", long, 3.0,
                                                  0.95)):
        worst, agree, total = _compare(q8, cfg, sequences)
        print(f"{name} vs float32: max abs logit diff {worst:.3f}, top-1 agreement "
              f"{agree}/{total}")
        assert worst < max_diff and agree >= min_agree * total
