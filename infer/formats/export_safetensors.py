"""Writes a Model as a Hugging Face Llama directory: model.safetensors, config.json,
generation_config.json, tokenizer.json and tokenizer_config.json (with the chat template), which
`LlamaForCausalLM.from_pretrained` and `AutoTokenizer.from_pretrained` load."""

from __future__ import annotations

import json
import os
import shutil
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


def _token(enc, token_id):
    return None if token_id is None else enc.decode([int(token_id)])


def write_safetensors_dir(m, out_dir, chat_template: str | None = None) -> None:
    """Writes the directory under a temporary name, then renames it into place."""
    from safetensors.numpy import save_file

    out_dir = Path(out_dir)
    tmp = out_dir.with_name(f"{out_dir.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        tensors = hf_layout.hf_from_params(m.params, m.config)
        save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        _write_json(tmp / "config.json", hf_config(m.config, m.bos_id, m.eos_ids))
        _write_json(tmp / "generation_config.json", {
            "bos_token_id": m.bos_id, "eos_token_id": m.eos_ids or None})
        bos = _token(m.tokenizer, m.bos_id)
        write_tokenizer_json(m.tokenizer, tmp / "tokenizer.json",
                             bos=bos if m.add_bos else None)
        tok_cfg = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": bos,
                   "eos_token": _token(m.tokenizer, m.eos_ids[0] if m.eos_ids else None),
                   "add_bos_token": bool(m.add_bos), "model_max_length": m.config.max_seq_len,
                   "clean_up_tokenization_spaces": False}
        if chat_template:
            tok_cfg["chat_template"] = chat_template
        _write_json(tmp / "tokenizer_config.json", tok_cfg)
        if out_dir.exists():  # the caller has checked that replacing it was asked for
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
