"""safetensors export in the Hugging Face Llama layout, loaded by transformers; the export CLI."""

import subprocess
import sys

import numpy as np
import pytest

from infer.formats.export import export
from tests.test_export_common import greedy_ids, tiny_twofiles_model
from tests.test_hf_tokenizer import varied_strings

PROMPT = "It was the best of times, it was"


@pytest.mark.parametrize("tied", [True, False], ids=["tied", "untied"])
def test_transformers_loads_the_directory(tmp_path, tied):
    import torch
    from transformers import AutoTokenizer, LlamaForCausalLM

    import infer
    from infer.chat import render as chat

    m = tiny_twofiles_model(tie_embeddings=tied)
    out = tmp_path / "hf"
    export(m, "safetensors", out)
    assert {p.name for p in out.iterdir()} >= {"model.safetensors", "config.json",
                                                "tokenizer.json", "tokenizer_config.json"}
    hf = LlamaForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    ids = m.encode(PROMPT)
    with torch.no_grad():
        expected = hf(torch.tensor([ids])).logits[0].numpy()
    assert float(np.abs(m.logits(ids) - expected).max()) <= 1e-4
    with torch.no_grad():
        hf_greedy = hf.generate(torch.tensor([ids]), max_new_tokens=16, do_sample=False,
                                eos_token_id=None, pad_token_id=0)[0, len(ids):].tolist()
    assert hf_greedy == greedy_ids(m, ids, 16)

    tok = AutoTokenizer.from_pretrained(out)
    for text in varied_strings(150):
        assert tok(text)["input_ids"] == m.encode(text), text  # BOS first, as ours
    from tests.test_export_gguf import CONVERSATIONS

    for messages in CONVERSATIONS:  # the template inside renders as infer.chat.render
        expected_ids, _ = chat.render(m.tokenizer, messages, add_generation_prompt=True)
        got = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        assert list(got["input_ids"] if hasattr(got, "keys") else got) == expected_ids

    back = infer.load(out)  # and our own HF loader reads it back exactly
    assert np.array_equal(back.logits(ids), m.logits(ids))
    assert back.eos_ids == m.eos_ids and back.add_bos


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "infer", "export", *map(str, args)],
                          capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_export_cli(tmp_path):
    import infer

    m = tiny_twofiles_model()
    src = tmp_path / "src"
    export(m, "twofiles", src)  # a params file is a model source like any other
    out = tmp_path / "tiny.gguf"
    result = _cli("--model", src / "model.bin", "--format", "gguf", "--out", out,
                  "--dtype", "q8_0")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(out)
    back = infer.load(out)
    ids = m.encode(PROMPT)
    assert float(np.abs(back.logits(ids) - m.logits(ids)).max()) < 3.0

    again = _cli("--model", src / "model.bin", "--format", "gguf", "--out", out)
    assert again.returncode == 2 and "already exists" in again.stderr
    missing = _cli("--model", tmp_path / "nope.gguf", "--format", "gguf", "--out", out)
    assert missing.returncode == 2 and "nope.gguf" in missing.stderr
    assert "Traceback" not in missing.stderr + again.stderr
