"""The Hugging Face Llama weight layout <-> the twofiles parameter tree, and the GGUF names.

HF stores linear weights as [out, in] (torch's convention); the twofiles tree stores [in, out]
with heads split out. Both use the same rotary convention (rotate_half), so no permutation is
needed here. GGUF (llama.cpp) stores Q and K rows permuted for its interleaved rotary kernel:
`gguf_permute` applies that permutation and `gguf_unpermute` undoes it.
"""

from __future__ import annotations

import numpy as np

import model

# Per-layer HF tensor names and their GGUF names.
LAYER_NAMES = {
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}
GLOBAL_NAMES = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
}


def hf_to_gguf_name(name: str) -> str:
    if name in GLOBAL_NAMES:
        return GLOBAL_NAMES[name]
    prefix, _, rest = name.partition("model.layers.")
    layer, _, suffix = rest.partition(".")
    return f"blk.{layer}.{LAYER_NAMES[suffix]}"


def gguf_to_hf_names(n_layers: int) -> dict[str, str]:
    names = {g: h for h, g in GLOBAL_NAMES.items()}
    for i in range(n_layers):
        for h, g in LAYER_NAMES.items():
            names[f"blk.{i}.{g}"] = f"model.layers.{i}.{h}"
    return names


def gguf_permute(w: np.ndarray, n_heads: int) -> np.ndarray:
    """HF rows [H*K, D] -> llama.cpp rows: within a head, (first half, second half) pairs
    become adjacent (the interleaved rotary layout)."""
    rows = w.shape[0]
    return (w.reshape(n_heads, 2, rows // n_heads // 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


def gguf_unpermute(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Inverse of `gguf_permute`."""
    rows = w.shape[0]
    return (w.reshape(n_heads, rows // n_heads // 2, 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


def expected_hf_shapes(cfg: model.ModelConfig) -> dict[str, tuple[int, ...]]:
    D, H, G, K, F, V = (cfg.d_model, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim, cfg.d_ff,
                        cfg.vocab_size)
    per_layer = {
        "input_layernorm.weight": (D,),
        "self_attn.q_proj.weight": (H * K, D),
        "self_attn.k_proj.weight": (G * K, D),
        "self_attn.v_proj.weight": (G * K, D),
        "self_attn.o_proj.weight": (D, H * K),
        "post_attention_layernorm.weight": (D,),
        "mlp.gate_proj.weight": (F, D),
        "mlp.up_proj.weight": (F, D),
        "mlp.down_proj.weight": (D, F),
    }
    shapes = {"model.embed_tokens.weight": (V, D), "model.norm.weight": (D,)}
    if not cfg.tie_embeddings:
        shapes["lm_head.weight"] = (V, D)
    for i in range(cfg.n_layers):
        for name, shape in per_layer.items():
            shapes[f"model.layers.{i}.{name}"] = shape
    return shapes


def check_hf_tensors(tensors: dict, cfg: model.ModelConfig, where: str,
                     error=ValueError) -> None:
    """Every expected tensor present with the right shape; nothing left over."""
    expected = expected_hf_shapes(cfg)
    missing = sorted(set(expected) - set(tensors))
    if missing:
        raise error(f"{where}: missing tensor(s) {missing[:5]}{' ...' if len(missing) > 5 else ''}")
    for name, shape in expected.items():
        if tuple(tensors[name].shape) != shape:
            raise error(f"{where}: tensor {name!r} has shape {tuple(tensors[name].shape)}, "
                        f"expected {shape} from the config")
    extra = sorted(set(tensors) - set(expected) - {"lm_head.weight"})
    extra = [n for n in extra if not n.endswith("rotary_emb.inv_freq")]
    if extra:
        raise error(f"{where}: unexpected tensor(s) {extra[:5]} (not a plain Llama model: "
                    "biases or other architectures are not supported)")


def params_from_hf(tensors: dict, cfg: model.ModelConfig) -> dict:
    """HF-named float32 arrays -> the twofiles parameter tree (numpy, float32)."""
    D, H, G, K, F, L = (cfg.d_model, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim, cfg.d_ff,
                        cfg.n_layers)

    def stack(suffix, fn):
        return np.stack([fn(np.asarray(tensors[f"model.layers.{i}.{suffix}"], np.float32))
                         for i in range(L)])

    params = {
        "embed": np.asarray(tensors["model.embed_tokens.weight"], np.float32),
        "layers": {
            "attn_norm": stack("input_layernorm.weight", lambda w: w),
            "wq": stack("self_attn.q_proj.weight", lambda w: w.T.reshape(D, H, K)),
            "wk": stack("self_attn.k_proj.weight", lambda w: w.T.reshape(D, G, K)),
            "wv": stack("self_attn.v_proj.weight", lambda w: w.T.reshape(D, G, K)),
            "wo": stack("self_attn.o_proj.weight", lambda w: w.T.reshape(H, K, D)),
            "mlp_norm": stack("post_attention_layernorm.weight", lambda w: w),
            "w_gate": stack("mlp.gate_proj.weight", lambda w: w.T),
            "w_up": stack("mlp.up_proj.weight", lambda w: w.T),
            "w_down": stack("mlp.down_proj.weight", lambda w: w.T),
        },
        "final_norm": np.asarray(tensors["model.norm.weight"], np.float32),
    }
    if not cfg.tie_embeddings:
        params["unembed"] = np.asarray(tensors["lm_head.weight"], np.float32).T
    return params


def hf_from_params(params: dict, cfg: model.ModelConfig) -> dict[str, np.ndarray]:
    """The twofiles parameter tree -> HF-named float32 arrays (contiguous)."""
    D, H, G, K, L = cfg.d_model, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim, cfg.n_layers
    layers = {k: np.asarray(v, np.float32) for k, v in params["layers"].items()}
    out = {"model.embed_tokens.weight": np.asarray(params["embed"], np.float32)}
    for i in range(L):
        p = f"model.layers.{i}."
        out[p + "input_layernorm.weight"] = layers["attn_norm"][i]
        out[p + "self_attn.q_proj.weight"] = layers["wq"][i].reshape(D, H * K).T
        out[p + "self_attn.k_proj.weight"] = layers["wk"][i].reshape(D, G * K).T
        out[p + "self_attn.v_proj.weight"] = layers["wv"][i].reshape(D, G * K).T
        out[p + "self_attn.o_proj.weight"] = layers["wo"][i].reshape(H * K, D).T
        out[p + "post_attention_layernorm.weight"] = layers["mlp_norm"][i]
        out[p + "mlp.gate_proj.weight"] = layers["w_gate"][i].T
        out[p + "mlp.up_proj.weight"] = layers["w_up"][i].T
        out[p + "mlp.down_proj.weight"] = layers["w_down"][i].T
    out["model.norm.weight"] = np.asarray(params["final_norm"], np.float32)
    if not cfg.tie_embeddings:
        out["lm_head.weight"] = np.asarray(params["unembed"], np.float32).T
    return {k: np.ascontiguousarray(v) for k, v in out.items()}
