"""Writes a Model as a Hugging Face Llama directory: model.safetensors, config.json,
generation_config.json, tokenizer.json and tokenizer_config.json (with the chat template), which
`LlamaForCausalLM.from_pretrained` and `AutoTokenizer.from_pretrained` load."""

from __future__ import annotations

import json
from pathlib import Path

from infer.formats import hf_layout
from infer.formats.hf_tokenizer import write_tokenizer_json


def hf_config(cfg, bos_id, eos_ids) -> dict:
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.d_model,
        "intermediate_size": cfg.d_ff,
        "num_hidden_layers": cfg.n_layers,
        "num_attention_heads": cfg.n_heads,
        "num_key_value_heads": cfg.n_kv_heads,
        "head_dim": cfg.head_dim,
        "max_position_embeddings": cfg.max_seq_len,
        "rms_norm_eps": cfg.norm_eps,
        "rope_theta": cfg.rope_theta,  # transformers < 5
        "rope_parameters": {"rope_type": "default", "rope_theta": cfg.rope_theta},  # >= 5
        "tie_word_embeddings": cfg.tie_embeddings,
        "hidden_act": "silu",
        "attention_bias": False,
        "mlp_bias": False,
        "torch_dtype": "float32",
        "bos_token_id": bos_id,
        "eos_token_id": eos_ids[0] if len(eos_ids) == 1 else (eos_ids or None),
    }


def generation_sampling(sampling: dict) -> dict:
    """transformers' spelling of sampler settings (temperature 0 is do_sample false)."""
    if sampling["temperature"] == 0:
        return {"do_sample": False}
    return {"do_sample": True, "temperature": sampling["temperature"],
            "top_k": sampling["top_k"], "top_p": sampling["top_p"]}


def _token(enc, token_id):
    return None if token_id is None else enc.decode([int(token_id)])


def write_safetensors_dir(m, paths: dict, chat_template: str | None = None,
                          sampling: dict | None = None) -> None:
    """Writes each file of the directory to paths[name] (infer.formats.export stages them
    under temporary names in the directory and renames them when all are whole). `sampling`
    (temperature, top_k, top_p) goes into generation_config.json."""
    from safetensors.numpy import save_file

    tensors = hf_layout.hf_from_params(m.params, m.config)
    save_file(tensors, str(paths["model.safetensors"]), metadata={"format": "pt"})
    _write_json(paths["config.json"], hf_config(m.config, m.bos_id, m.eos_ids))
    _write_json(paths["generation_config.json"], {
        "bos_token_id": m.bos_id, "eos_token_id": m.eos_ids or None,
        **(generation_sampling(sampling) if sampling else {})})
    bos = _token(m.tokenizer, m.bos_id)
    write_tokenizer_json(m.tokenizer, paths["tokenizer.json"], bos=bos if m.add_bos else None)
    tok_cfg = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": bos,
               "eos_token": _token(m.tokenizer, m.eos_ids[0] if m.eos_ids else None),
               "add_bos_token": bool(m.add_bos), "model_max_length": m.config.max_seq_len,
               "clean_up_tokenization_spaces": False}
    if chat_template:
        tok_cfg["chat_template"] = chat_template
    _write_json(paths["tokenizer_config.json"], tok_cfg)


def _write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
