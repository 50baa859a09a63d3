"""A Hugging Face Llama directory (config.json, *.safetensors, tokenizer files) -> Model fields."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

import model
from infer.formats import hf_bpe
from infer.formats import hf_layout
from infer.formats.hf_bpe import TokenizerError


class HFError(ValueError):
    """The directory is not a Llama model we can load; the message names the file and why."""


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise HFError(f"{path}: cannot read JSON: {e}") from None


def config_from_hf(hf: dict, where: str) -> model.ModelConfig:
    archs = hf.get("architectures") or ["LlamaForCausalLM"]
    if hf.get("model_type", "llama") != "llama" or archs[0] != "LlamaForCausalLM":
        raise HFError(f"{where}: model_type {hf.get('model_type')!r} / architectures {archs} "
                      "is not supported (only LlamaForCausalLM)")
    for flag in ("attention_bias", "mlp_bias"):
        if hf.get(flag):
            raise HFError(f"{where}: {flag}=true is not supported")
    # transformers < 5 writes rope_theta (+ rope_scaling); 5.x writes rope_parameters.
    rope = dict(hf.get("rope_parameters") or {})
    scaling = hf.get("rope_scaling") or {}
    rope_type = rope.get("rope_type", scaling.get("rope_type", scaling.get("type", "default")))
    if rope_type != "default":
        raise HFError(f"{where}: rope type {rope_type!r} is not supported (only default rope)")
    theta = rope.get("rope_theta", hf.get("rope_theta", 10000.0))
    if hf.get("hidden_act", "silu") != "silu":
        raise HFError(f"{where}: hidden_act {hf['hidden_act']!r} is not supported (silu only)")
    try:
        d_model, n_heads = int(hf["hidden_size"]), int(hf["num_attention_heads"])
        cfg = model.ModelConfig(
            vocab_size=int(hf["vocab_size"]), d_model=d_model,
            n_layers=int(hf["num_hidden_layers"]), n_heads=n_heads,
            n_kv_heads=int(hf.get("num_key_value_heads") or n_heads),
            d_ff=int(hf["intermediate_size"]),
            max_seq_len=int(hf.get("max_position_embeddings", 2048)),
            rope_theta=float(theta),
            norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
            tie_embeddings=bool(hf.get("tie_word_embeddings", False)))
    except KeyError as e:
        raise HFError(f"{where}: required field {e.args[0]!r} is missing") from None
    except (TypeError, ValueError) as e:
        raise HFError(f"{where}: {e}") from None
    head_dim = hf.get("head_dim")
    if head_dim is not None and int(head_dim) != cfg.head_dim:
        raise HFError(f"{where}: head_dim={head_dim} differs from hidden_size/num_attention_heads"
                      f"={cfg.head_dim}; not supported")
    return cfg


def read_safetensors(directory: Path) -> dict[str, np.ndarray]:
    """All tensors of model.safetensors, or of the shards an index lists, as float32."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    index = directory / "model.safetensors.index.json"
    if index.exists():
        files = sorted(set(_read_json(index).get("weight_map", {}).values()))
    else:
        files = sorted(p.name for p in directory.glob("*.safetensors"))
    tensors = {}
    for name in files:
        path = directory / name
        try:
            loaded = _load_safetensors(path, load_file)
        except (OSError, SafetensorError, ValueError) as e:
            raise HFError(f"{path}: cannot read safetensors: {e}") from None
        tensors.update(loaded)
    return tensors


def _load_safetensors(path: Path, load_file) -> dict[str, np.ndarray]:
    try:
        return {k: v.astype(np.float32) for k, v in load_file(path).items()}
    except (TypeError, ValueError):
        # bfloat16 has no numpy dtype: read through torch if it is there.
        import torch
        from safetensors.torch import load_file as load_torch

        return {k: v.to(torch.float32).numpy() for k, v in load_torch(path).items()}


def read_tokenizer(directory: Path):
    """(tiktoken.Encoding, chat_template, bos_id, eos_ids, add_bos) from the tokenizer files."""
    from infer.formats.hf_tokenizer import read_tokenizer_json

    path = directory / "tokenizer.json"
    if not path.exists():
        raise HFError(f"{directory}: tokenizer.json is missing (a byte-level BPE tokenizer.json "
                      "is needed)")
    try:
        enc = read_tokenizer_json(path)
    except TokenizerError as e:
        raise HFError(str(e)) from None
    tok_cfg_path = directory / "tokenizer_config.json"
    tok_cfg = _read_json(tok_cfg_path) if tok_cfg_path.exists() else {}
    spec = _read_json(path)

    def token_id(value):
        if isinstance(value, dict):
            value = value.get("content")
        if value is None or value not in enc.special_tokens_set:
            return None
        return enc.encode_single_token(value)

    bos = token_id(tok_cfg.get("bos_token"))
    eos = token_id(tok_cfg.get("eos_token"))
    gen_path = directory / "generation_config.json"
    gen = _read_json(gen_path) if gen_path.exists() else {}
    # Generation stops at the tokenizer's EOS and at generation_config's (Llama 3 lists two).
    gen_eos = gen.get("eos_token_id")
    gen_eos = gen_eos if isinstance(gen_eos, list) else [gen_eos]
    eos_ids = sorted({int(i) for i in [eos, *gen_eos] if i is not None})
    # The tokenizer adds BOS when its post-processor puts a special token first.
    post = spec.get("post_processor") or {}
    first = (post.get("single") or [{}])[0] if post.get("type") == "TemplateProcessing" else {}
    add_bos = "SpecialToken" in first
    if add_bos:
        bos = token_id(first["SpecialToken"]["id"])
    template = tok_cfg.get("chat_template")
    if isinstance(template, list):  # named templates: take the default one
        template = next((t["template"] for t in template if t.get("name") == "default"), None)
    return enc, template, bos, eos_ids, add_bos


def load_hf_dir(directory) -> dict:
    directory = Path(directory)
    cfg = config_from_hf(_read_json(directory / "config.json"), str(directory / "config.json"))
    tensors = read_safetensors(directory)
    if cfg.tie_embeddings:
        tensors.pop("lm_head.weight", None)
    hf_layout.check_hf_tensors(tensors, cfg, str(directory), error=HFError)
    enc, template, bos, eos_ids, add_bos = read_tokenizer(directory)
    if hf_bpe.vocab_size(enc) > cfg.vocab_size:
        raise HFError(f"{directory}: tokenizer has {hf_bpe.vocab_size(enc)} tokens, config vocab_size "
                      f"is {cfg.vocab_size}")
    gen_path = directory / "generation_config.json"
    # Kept for infer.runtime.sampling_defaults: the model's recommended sampling settings.
    metadata = {"generation_config": _read_json(gen_path) if gen_path.exists() else {},
                "directory_name": directory.resolve().name}
    return dict(config=cfg, params=hf_layout.params_from_hf(tensors, cfg), tokenizer=enc,
                chat_template=template, bos_id=bos, eos_ids=eos_ids, add_bos=add_bos,
                metadata=metadata)
