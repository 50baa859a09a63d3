"""infer.load on Hugging Face Llama directories written by transformers' own save_pretrained."""

import json

import numpy as np
import pytest

import model
from tests.hf_reference import random_hf_llama
from tests.test_hf_tokenizer import varied_strings

TEXT = ["The quick brown fox jumps over the lazy dog. " * 3, "def f(x):\n    return x * 2\n",
        "Numbers 12345 and 3.14, naïve café."]


def _train_hf_tokenizer(vocab_size: int):
    """A small byte-level BPE (the `tokenizers` trainer) that puts <|bos|> before each text."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>",
                                                                         "<|bos|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(TEXT * 20, trainer)
    bos = tok.token_to_id("<|bos|>")
    tok.post_processor = processors.TemplateProcessing(single="<|bos|> $A",
                                                       special_tokens=[("<|bos|>", bos)])
    return tok


def _write_hf_dir(path, cfg, seed, **save_kwargs):
    from transformers import PreTrainedTokenizerFast

    fast = PreTrainedTokenizerFast(tokenizer_object=_train_hf_tokenizer(300),
                                   bos_token="<|bos|>", eos_token="<|endoftext|>")
    hf = random_hf_llama(cfg, seed=seed)
    for c in (hf.config, hf.generation_config):  # as a real model's files agree
        c.bos_token_id, c.eos_token_id = fast.bos_token_id, fast.eos_token_id
    hf.save_pretrained(path, **save_kwargs)
    fast.save_pretrained(path)
    return hf, fast


CASES = {
    "tied": (["vocab_size=320", "n_heads=4", "n_kv_heads=2", "tie_embeddings=true"], {}),
    "untied-sharded": (["vocab_size=320", "n_heads=8", "n_kv_heads=2", "d_model=128",
                        "tie_embeddings=false", "rope_theta=100000"],
                       {"max_shard_size": "100KB"}),
}


@pytest.mark.parametrize("name", CASES)
def test_logits_and_tokens_match_transformers(tmp_path, name):
    import torch
    from transformers import AutoTokenizer

    import infer

    overrides, save_kwargs = CASES[name]
    cfg = model.apply_overrides(model.preset("tiny"), overrides)
    hf, _ = _write_hf_dir(tmp_path, cfg, seed=len(name), **save_kwargs)
    if save_kwargs:
        assert (tmp_path / "model.safetensors.index.json").exists()
    m = infer.load(tmp_path)
    assert m.kind == "hf" and m.config.tie_embeddings == cfg.tie_embeddings
    tokens = np.random.default_rng(0).integers(0, cfg.vocab_size, 40).tolist()
    with torch.no_grad():
        expected = hf(torch.tensor([tokens])).logits[0].numpy()
    diff = float(np.abs(m.logits(tokens) - expected).max())
    assert diff <= 1e-4, f"max abs logit difference {diff}"

    hf_tok = AutoTokenizer.from_pretrained(tmp_path)
    assert m.add_bos and m.bos_id == hf_tok.bos_token_id
    assert m.eos_ids == [hf_tok.eos_token_id]
    for text in varied_strings(100):
        if "<|" not in text:
            assert m.encode(text) == hf_tok(text)["input_ids"], text


def test_bad_directories_get_clear_errors(tmp_path):
    import infer
    from infer.formats.hf_load import HFError

    cfg = model.apply_overrides(model.preset("tiny"), ["vocab_size=320"])
    _write_hf_dir(tmp_path, cfg, seed=0)
    config_path = tmp_path / "config.json"
    good = json.loads(config_path.read_text())

    config_path.write_text(json.dumps(dict(good, num_hidden_layers=3)))
    with pytest.raises(HFError, match=r"missing tensor.*layers\.2"):
        infer.load(tmp_path)
    config_path.write_text(json.dumps(dict(good, model_type="mistral",
                                           architectures=["MistralForCausalLM"])))
    with pytest.raises(HFError, match="config.json.*not supported"):
        infer.load(tmp_path)
    config_path.write_text("{not json")
    with pytest.raises(HFError, match="config.json: cannot read JSON"):
        infer.load(tmp_path)
    config_path.write_text(json.dumps(good))
    (tmp_path / "tokenizer.json").unlink()
    with pytest.raises(HFError, match="tokenizer.json is missing"):
        infer.load(tmp_path)
    with pytest.raises(infer.LoadError, match="no such file"):
        infer.load(tmp_path / "nowhere")
