"""Given the same weights, our forward equals Hugging Face's LlamaForCausalLM (PyTorch, fp32)."""

import jax.numpy as jnp
import numpy as np
import pytest

import model
from tests.hf_reference import hf_to_tree, random_hf_llama

CASES = {
    "gqa-tied": ["n_heads=4", "n_kv_heads=2", "tie_embeddings=true"],
    "gqa-untied": ["n_heads=8", "n_kv_heads=2", "d_model=128", "tie_embeddings=false",
                   "rope_theta=100000"],
    "mha-untied": ["n_heads=4", "n_kv_heads=4", "n_layers=3", "tie_embeddings=false",
                   "norm_eps=1e-6"],
}


@pytest.mark.parametrize("name", CASES)
def test_logits_match_transformers(name):
    import torch

    cfg = model.apply_overrides(model.preset("tiny"), CASES[name])
    hf = random_hf_llama(cfg, seed=len(name))
    params = hf_to_tree(hf, cfg)
    tokens = np.random.default_rng(0).integers(0, cfg.vocab_size, (2, 40))
    with torch.no_grad():
        ref = hf(torch.from_numpy(tokens)).logits.numpy()
    ours, _ = model.forward(params, jnp.asarray(tokens), cfg)
    assert np.abs(np.asarray(ours) - ref).max() < 1e-4
