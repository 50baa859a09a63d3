"""GGUF export, read back by llama.cpp (llama-cpp-python) and by transformers' GGUF loader."""

import numpy as np
import pytest

from infer.formats.export import TWOFILES_CHAT_TEMPLATE, export
from tests.test_export_common import greedy_ids, tiny_twofiles_model
from tests.test_hf_tokenizer import varied_strings

PROMPT = "It was the best of times, it was"
STEPS = 16
# Max abs logit difference from our float32 forward allowed for each weight type (logits here
# span about +-35). llama.cpp also quantises activations for q8_0 matmuls.
TOLERANCE = {"f32": 5e-3, "f16": 0.2, "q8_0": 3.0}
CONVERSATIONS = [
    [{"role": "user", "content": "hello there 123"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi!"},
     {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "  spaces\n"}],
]


def _llama(path, **kwargs):
    from tests import llama_cpp_peer

    # float32 KV cache (type 0), so that f32 weights compare at float32 precision
    return llama_cpp_peer.load(path, n_ctx=128, logits_all=True, verbose=False, n_threads=2,
                               type_k=0, type_v=0, **kwargs)


def _llama_greedy(llm, ids, steps):
    llm.reset()
    llm.eval(list(ids))
    out = []
    for _ in range(steps):
        out.append(int(np.argmax(llm.scores[llm.n_tokens - 1])))
        llm.eval([out[-1]])
    return out


def _hf_greedy(hf, ids, steps):
    import torch

    with torch.no_grad():
        out = hf.generate(torch.tensor([ids]), max_new_tokens=steps, do_sample=False,
                          eos_token_id=None, pad_token_id=0)
    return out[0, len(ids):].tolist()


@pytest.fixture(scope="module", params=["f32", "f16", "q8_0"])
def exported(request, tmp_path_factory):
    m = tiny_twofiles_model()
    path = tmp_path_factory.mktemp("gguf") / f"tiny-{request.param}.gguf"
    assert export(m, "gguf", path, dtype=request.param) == [path]
    return request.param, m, path


def test_llama_cpp_logits_and_greedy_tokens(exported):
    dtype, m, path = exported
    llm = _llama(path)
    ids = m.encode(PROMPT)
    llm.eval(ids)
    diff = float(np.abs(np.array(llm.scores[:len(ids)]) - m.logits(ids)).max())
    assert diff <= TOLERANCE[dtype], f"{dtype}: llama.cpp vs ours {diff}"
    assert _llama_greedy(llm, ids, STEPS) == greedy_ids(m, ids, STEPS)


def test_transformers_reads_the_same_weights(exported):
    import torch
    from transformers import AutoModelForCausalLM

    import infer

    dtype, m, path = exported
    hf = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name,
                                              dtype=torch.float32).eval()
    ids = m.encode(PROMPT)
    with torch.no_grad():
        expected = hf(torch.tensor([ids])).logits[0].numpy()
    # Both dequantise the same file: equal up to float32 rounding, whatever the weight type.
    back = infer.load(path)
    assert float(np.abs(back.logits(ids) - expected).max()) <= 1e-4
    assert float(np.abs(m.logits(ids) - expected).max()) <= TOLERANCE[dtype]
    assert _hf_greedy(hf, ids, STEPS) == greedy_ids(m, ids, STEPS)


def test_tokenizer_and_chat_template_inside(tmp_path):
    from llama_cpp import Llama
    from transformers import AutoTokenizer

    from infer.chat import render as chat

    m = tiny_twofiles_model()
    path = tmp_path / "tiny.gguf"
    export(m, "gguf", path, dtype="f32")
    vocab = Llama(str(path), vocab_only=True, verbose=False)
    bad = [s for s in varied_strings()
           if vocab.tokenize(s.encode(), add_bos=False, special=False)
           != m.tokenizer.encode_ordinary(s)]
    assert not bad, f"{len(bad)} strings tokenize differently in llama.cpp, first: {bad[0]!r}"
    assert vocab.token_bos() == m.bos_id
    assert vocab.tokenize(b"Hello", add_bos=True, special=False) == m.encode("Hello")
    assert vocab.metadata["tokenizer.chat_template"] == TWOFILES_CHAT_TEMPLATE

    tok = AutoTokenizer.from_pretrained(str(tmp_path), gguf_file=path.name)
    for messages in CONVERSATIONS:
        expected, _ = chat.render(m.tokenizer, messages, add_generation_prompt=True)
        got = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        got = got["input_ids"] if isinstance(got, dict) or hasattr(got, "keys") else got
        assert list(got) == list(expected)


def test_untied_model_and_refusals(tmp_path):
    from infer.formats.export import ExportError

    m = tiny_twofiles_model(tie_embeddings=False)
    path = tmp_path / "untied.gguf"
    export(m, "gguf", path, dtype="f32")
    llm = _llama(path)
    ids = m.encode(PROMPT)
    assert _llama_greedy(llm, ids, STEPS) == greedy_ids(m, ids, STEPS)
    with pytest.raises(ExportError, match="already exists"):
        export(m, "gguf", path)
    with pytest.raises(ExportError, match="dtype 'q4_0' is not supported"):
        export(m, "gguf", tmp_path / "other.gguf", dtype="q4_0")
    assert not (tmp_path / "other.gguf").exists()
