"""Exact parameter and FLOP counts, from the config alone (nothing is allocated)."""

from __future__ import annotations

import math

import jax

from model.config import ModelConfig
from model.params import ParamSpec, param_specs


def count_params(cfg: ModelConfig) -> dict[str, int]:
    """Total parameters, and those outside the vocabulary matrices.

    `non_embedding_params` excludes the token embedding and, when untied, the output projection
    (Kaplan et al.'s N, the one scaling laws in N are usually fitted on).
    """
    specs = param_specs(cfg)
    sizes = {path: math.prod(s.shape) for path, s in
             jax.tree_util.tree_flatten_with_path(specs, is_leaf=lambda x: isinstance(x, ParamSpec))[0]}
    total = sum(sizes.values())
    vocab = cfg.vocab_size * cfg.d_model * (1 if cfg.tie_embeddings else 2)
    return {"params": total, "non_embedding_params": total - vocab}


def forward_flops_per_token(cfg: ModelConfig, seq_len: int | None = None) -> int:
    """Multiply-add FLOPs (2 per MAC) of one token's forward pass in a window of `seq_len`.

    Counts every matmul the forward performs: the projections, the MLP, the output projection
    (also when tied), and attention's scores and weighted sum over the full window, as computed
    (the causal mask saves no work in this implementation). Norms, rotary, softmax and the
    embedding lookup are not counted (they are O(D) per token, not O(D^2)).
    """
    T = seq_len or cfg.max_seq_len
    D, H, G, K, F = cfg.d_model, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim, cfg.d_ff
    per_layer = 2 * (D * H * K + 2 * D * G * K + H * K * D + 3 * D * F) + 2 * 2 * T * H * K
    return cfg.n_layers * per_layer + 2 * D * cfg.vocab_size


def flops_per_token(cfg: ModelConfig, seq_len: int | None = None, training: bool = True) -> int:
    """FLOPs per token: forward only, or a training step's forward + backward (3x forward)."""
    fwd = forward_flops_per_token(cfg, seq_len)
    return 3 * fwd if training else fwd
