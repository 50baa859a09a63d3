"""Named model shapes. Published models carry the shapes of their released checkpoints."""

from __future__ import annotations

from model.config import ConfigError, ModelConfig

_PRESETS: dict[str, dict] = {
    # Tests: compiles in a second or two on a laptop CPU. The vocabulary is one a trained
    # twofiles tokenizer can have (at least 256 bytes + its special tokens + a merge).
    "tiny": dict(vocab_size=512, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=192,
                 max_seq_len=128),
    # The `make demo` model, exactly train/configs/demo.json's: trains on 2 CPU cores in minutes.
    "demo": dict(vocab_size=2048, d_model=128, n_layers=2, n_heads=4, n_kv_heads=4, d_ff=384,
                 max_seq_len=128, scan_layers=False),
    # The throughput benchmark model (~14M parameters).
    "bench": dict(vocab_size=8192, d_model=384, n_layers=6, n_heads=6, n_kv_heads=6, d_ff=1024,
                  max_seq_len=256),
    # HuggingFaceTB/SmolLM2-135M(-Instruct) config.json.
    "smollm2-135m": dict(vocab_size=49152, d_model=576, n_layers=30, n_heads=9, n_kv_heads=3,
                         d_ff=1536, max_seq_len=8192, rope_theta=100000.0, norm_eps=1e-5,
                         tie_embeddings=True),
    # Llama 2 (Touvron et al., 2023), as released in meta-llama/Llama-2-*-hf.
    "llama2-7b": dict(vocab_size=32000, d_model=4096, n_layers=32, n_heads=32, n_kv_heads=32,
                      d_ff=11008, max_seq_len=4096, norm_eps=1e-5, tie_embeddings=False),
    "llama2-13b": dict(vocab_size=32000, d_model=5120, n_layers=40, n_heads=40, n_kv_heads=40,
                       d_ff=13824, max_seq_len=4096, norm_eps=1e-5, tie_embeddings=False),
    "llama2-70b": dict(vocab_size=32000, d_model=8192, n_layers=80, n_heads=64, n_kv_heads=8,
                       d_ff=28672, max_seq_len=4096, norm_eps=1e-5, tie_embeddings=False),
}


def names() -> list[str]:
    return list(_PRESETS)


def preset(name: str) -> ModelConfig:
    """The ModelConfig of a named preset (see `names()`)."""
    if name not in _PRESETS:
        raise ConfigError(f"unknown model preset {name!r}; presets: {', '.join(_PRESETS)}")
    return ModelConfig(**_PRESETS[name])
