"""A tiny twofiles model (model.init + a tokenizer trained by train.tokenizer) for the export
tests, and the checks that it is what they assume."""

import dataclasses
import functools

import jax
import numpy as np

import model

CORPUS = [
    "It was the best of times, it was the worst of times, it was the age of wisdom, it was the "
    "age of foolishness, it was the epoch of belief, it was the epoch of incredulity.",
    "def add(a, b):\n    return a + b\n\nprint(add(2, 40))  # 42\n",
    "The quick brown fox jumps over the lazy dog 1234567890 times. Naïve café, déjà vu!",
    "User: hello there\nAssistant: Hi! How can I help you today?\n",
]


@functools.lru_cache(maxsize=None)
def tiny_twofiles_model(tie_embeddings: bool = True, seed: int = 0):
    """An infer.Model of the tiny preset with random weights, scaled up (embeddings std 1,
    matrices std 0.2, unembedding 0.4) so that logits are spread out and greedy text varies:
    greedy choices are decided by clear margins, not by the last bits of float rounding or
    8-bit quantisation, across implementations."""
    from infer.load_model import Model, twofiles_fields
    from train import tokenizer as tok

    ranks, pattern = tok.train_tokenizer(CORPUS * 4, 320)
    enc = tok.encoding(ranks, pattern)
    cfg = model.apply_overrides(model.preset("tiny"), [
        f"vocab_size={enc.n_vocab}", f"tie_embeddings={str(tie_embeddings).lower()}",
        "n_heads=4", "n_kv_heads=2", "max_seq_len=128"])
    params = jax.tree.map(lambda a: np.asarray(a) * (10.0 if a.ndim >= 2 else 1.0),
                          model.init(cfg, jax.random.key(seed)))
    params["embed"] = params["embed"] * 5.0
    if "unembed" in params:
        params["unembed"] = params["unembed"] * 2.0
    rng = np.random.default_rng(seed)
    params["layers"]["attn_norm"] = 1 + 0.1 * rng.standard_normal(
        params["layers"]["attn_norm"].shape).astype(np.float32)
    fields = twofiles_fields(cfg, params, enc)
    return Model(source="tiny", kind="twofiles", **fields)


def greedy_ids(m, prompt_ids, steps, stop_ids=()):
    """Greedy continuation by repeated full forwards (no cache): the plain definition."""
    ids = list(prompt_ids)
    out = []
    for _ in range(steps):
        nxt = int(m.logits(ids).argmax(-1)[-1])
        if nxt in stop_ids:
            break
        out.append(nxt)
        ids.append(nxt)
    return out


def test_tiny_model_is_a_twofiles_model():
    m = tiny_twofiles_model()
    assert "<|assistant_start|>" in m.tokenizer.special_tokens_set
    assert m.add_bos and m.encode("hi")[0] == m.bos_id
    logits = m.logits(m.encode("It was the best of times"))
    assert logits.shape == (len(m.encode("It was the best of times")), m.config.vocab_size)
    top2 = np.sort(logits, axis=-1)[:, -2:]
    assert (top2[:, 1] - top2[:, 0]).min() > 1e-3  # greedy is decided by clear margins
    assert dataclasses.asdict(m.config)["tie_embeddings"] is True
