"""A plain PyTorch version of twofiles' decoder, for the training-throughput race.

Same architecture as model/transformer.py: token embedding, pre-norm blocks (RMSNorm, causal
self-attention with rotate-half RoPE and grouped-query heads through
F.scaled_dot_product_attention, SwiGLU MLP), final RMSNorm, output projection tied to the
embedding. Written the way a PyTorch user would write it (nn.Linear layers, [out, in] weights),
so the comparison is against idiomatic PyTorch rather than a port of the JAX code.

`load_twofiles_params` copies a twofiles parameter tree into the module, so both frameworks can
be checked to compute the same loss on the same weights before they are timed.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from model.config import ModelConfig


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x_BTD: torch.Tensor) -> torch.Tensor:
        x_BTD = x_BTD.float()
        return x_BTD * torch.rsqrt(x_BTD.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rope_tables(seq_len: int, head_dim: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of the rotary angles, [T, K/2] each."""
    inv_freq_k = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    angles_Tk = torch.arange(seq_len, dtype=torch.float32)[:, None] * inv_freq_k[None, :]
    return angles_Tk.cos(), angles_Tk.sin()


def apply_rope(x_BNTK: torch.Tensor, cos_Tk: torch.Tensor, sin_Tk: torch.Tensor) -> torch.Tensor:
    """Rotate-half rotary embedding (the Hugging Face Llama layout)."""
    x1, x2 = x_BNTK.chunk(2, dim=-1)
    return torch.cat([x1 * cos_Tk - x2 * sin_Tk, x2 * cos_Tk + x1 * sin_Tk], dim=-1)


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        D, H, G, K, Fw = cfg.d_model, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim, cfg.d_ff
        self.n_heads, self.n_kv_heads, self.head_dim = H, G, K
        self.attn_norm = RMSNorm(D, cfg.norm_eps)
        self.q_proj = nn.Linear(D, H * K, bias=False)
        self.k_proj = nn.Linear(D, G * K, bias=False)
        self.v_proj = nn.Linear(D, G * K, bias=False)
        self.o_proj = nn.Linear(H * K, D, bias=False)
        self.mlp_norm = RMSNorm(D, cfg.norm_eps)
        self.gate_proj = nn.Linear(D, Fw, bias=False)
        self.up_proj = nn.Linear(D, Fw, bias=False)
        self.down_proj = nn.Linear(Fw, D, bias=False)

    def forward(self, x_BTD, cos_Tk, sin_Tk):
        B, T, _ = x_BTD.shape
        H, G, K = self.n_heads, self.n_kv_heads, self.head_dim
        h_BTD = self.attn_norm(x_BTD)
        q_BHTK = self.q_proj(h_BTD).view(B, T, H, K).transpose(1, 2)
        k_BGTK = self.k_proj(h_BTD).view(B, T, G, K).transpose(1, 2)
        v_BGTK = self.v_proj(h_BTD).view(B, T, G, K).transpose(1, 2)
        q_BHTK = apply_rope(q_BHTK, cos_Tk, sin_Tk)
        k_BGTK = apply_rope(k_BGTK, cos_Tk, sin_Tk)
        attn_BHTK = F.scaled_dot_product_attention(
            q_BHTK.to(v_BGTK.dtype), k_BGTK.to(v_BGTK.dtype), v_BGTK, is_causal=True,
            enable_gqa=G != H)
        x_BTD = x_BTD + self.o_proj(attn_BHTK.transpose(1, 2).reshape(B, T, H * K))
        h_BTD = self.mlp_norm(x_BTD)
        return x_BTD + self.down_proj(F.silu(self.gate_proj(h_BTD)) * self.up_proj(h_BTD))


class Transformer(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        if not cfg.tie_embeddings:
            raise ValueError("torch_reference implements tied embeddings only (the bench preset)")
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.final_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        cos_Tk, sin_Tk = rope_tables(cfg.max_seq_len, cfg.head_dim, cfg.rope_theta)
        self.register_buffer("cos_Tk", cos_Tk, persistent=False)
        self.register_buffer("sin_Tk", sin_Tk, persistent=False)
        for name, p in self.named_parameters():
            if p.dim() == 2:
                std = 0.02 / math.sqrt(2 * cfg.n_layers) if name.endswith(
                    ("o_proj.weight", "down_proj.weight")) else 0.02
                nn.init.normal_(p, std=std)

    def forward(self, tokens_BT: torch.Tensor) -> torch.Tensor:
        T = tokens_BT.shape[1]
        x_BTD = self.embed(tokens_BT)
        cos_Tk, sin_Tk = self.cos_Tk[:T], self.sin_Tk[:T]
        for layer in self.layers:
            x_BTD = layer(x_BTD, cos_Tk, sin_Tk)
        return F.linear(self.final_norm(x_BTD), self.embed.weight).float()


def loss_fn(net: Transformer, inputs_BT: torch.Tensor, targets_BT: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy in float32."""
    logits_BTV = net(inputs_BT)
    return F.cross_entropy(logits_BTV.reshape(-1, logits_BTV.shape[-1]), targets_BT.reshape(-1))


def make_optimizer(net: Transformer, lr: float, b1: float, b2: float, eps: float,
                   weight_decay: float, fused: bool = True) -> torch.optim.AdamW:
    """AdamW with decoupled weight decay on the matrices only (not norms or the embedding),
    as train/optim.py does."""
    decay = [p for n, p in net.named_parameters() if p.dim() == 2 and not n.startswith("embed")]
    no_decay = [p for n, p in net.named_parameters() if not (p.dim() == 2 and
                                                             not n.startswith("embed"))]
    groups = [{"params": decay, "weight_decay": weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=(b1, b2), eps=eps, fused=fused)


def load_twofiles_params(net: Transformer, params: dict) -> None:
    """Copies a twofiles parameter tree (model.init layout) into `net`.

    twofiles stores x @ W weights ([in, ..., out]); nn.Linear stores [out, in].
    """
    cfg = net.cfg
    D = cfg.d_model
    p = {k: np.asarray(v, np.float32) for k, v in params.items() if k != "layers"}
    layers = {k: np.asarray(v, np.float32) for k, v in params["layers"].items()}

    def t(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a))

    with torch.no_grad():
        net.embed.weight.copy_(t(p["embed"]))
        net.final_norm.weight.copy_(t(p["final_norm"]))
        for i, block in enumerate(net.layers):
            block.attn_norm.weight.copy_(t(layers["attn_norm"][i]))
            block.mlp_norm.weight.copy_(t(layers["mlp_norm"][i]))
            block.q_proj.weight.copy_(t(layers["wq"][i].reshape(D, -1).T))
            block.k_proj.weight.copy_(t(layers["wk"][i].reshape(D, -1).T))
            block.v_proj.weight.copy_(t(layers["wv"][i].reshape(D, -1).T))
            block.o_proj.weight.copy_(t(layers["wo"][i].reshape(-1, D).T))
            block.gate_proj.weight.copy_(t(layers["w_gate"][i].T))
            block.up_proj.weight.copy_(t(layers["w_up"][i].T))
            block.down_proj.weight.copy_(t(layers["w_down"][i].T))
