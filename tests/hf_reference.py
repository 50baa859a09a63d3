"""Hugging Face transformers as the independent reference: a random Llama and its weights in
twofiles' tree. (The layout mapping is restated here on purpose, so that the parity test does
not trust the project's own importer.)"""

import numpy as np


def random_hf_llama(cfg, seed: int = 0):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    hf_cfg = LlamaConfig(
        vocab_size=cfg.vocab_size, hidden_size=cfg.d_model, intermediate_size=cfg.d_ff,
        num_hidden_layers=cfg.n_layers, num_attention_heads=cfg.n_heads,
        num_key_value_heads=cfg.n_kv_heads, max_position_embeddings=cfg.max_seq_len,
        rms_norm_eps=cfg.norm_eps, rope_theta=cfg.rope_theta,
        tie_word_embeddings=cfg.tie_embeddings, attention_bias=False, mlp_bias=False)
    hf = LlamaForCausalLM(hf_cfg).eval()
    with torch.no_grad():  # norms start at 1; randomise them so the test sees them
        for name, p in hf.named_parameters():
            if "norm" in name:
                p.copy_(1 + 0.1 * torch.randn_like(p))
    return hf


def hf_to_tree(hf, cfg) -> dict:
    sd = {k: v.detach().numpy().astype(np.float32) for k, v in hf.state_dict().items()}
    D, H, G, K = cfg.d_model, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim

    def stack(fmt, fn):
        return np.stack([fn(sd[fmt.format(i)]) for i in range(cfg.n_layers)])

    layer = "model.layers.{}."
    tree = {
        "embed": sd["model.embed_tokens.weight"],
        "layers": {
            "attn_norm": stack(layer + "input_layernorm.weight", lambda w: w),
            "wq": stack(layer + "self_attn.q_proj.weight", lambda w: w.T.reshape(D, H, K)),
            "wk": stack(layer + "self_attn.k_proj.weight", lambda w: w.T.reshape(D, G, K)),
            "wv": stack(layer + "self_attn.v_proj.weight", lambda w: w.T.reshape(D, G, K)),
            "wo": stack(layer + "self_attn.o_proj.weight", lambda w: w.T.reshape(H, K, D)),
            "mlp_norm": stack(layer + "post_attention_layernorm.weight", lambda w: w),
            "w_gate": stack(layer + "mlp.gate_proj.weight", lambda w: w.T),
            "w_up": stack(layer + "mlp.up_proj.weight", lambda w: w.T),
            "w_down": stack(layer + "mlp.down_proj.weight", lambda w: w.T),
        },
        "final_norm": sd["model.norm.weight"],
    }
    if not cfg.tie_embeddings:
        tree["unembed"] = sd["lm_head.weight"].T
    return tree
