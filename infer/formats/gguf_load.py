"""A llama-architecture GGUF file -> config, float32 parameters, tiktoken tokenizer, template."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tqdm import tqdm

import model
from infer.formats import hf_bpe
from infer.formats import hf_layout
from infer.formats.gguf_read import GGUFError, open_reader, read_metadata, read_tensor

# GGUF token types (llama.cpp's llama_token_type): 1 normal, 6 byte are plain BPE tokens; the
# others (unknown, control, user-defined, unused) are matched whole, as tiktoken specials.
PLAIN_TOKEN_TYPES = (1, 6)


def _get(meta: dict, key: str, path, kind=int, default=None):
    if key not in meta:
        if default is not None:
            return default
        raise GGUFError(f"{path}: required metadata key {key!r} is missing")
    value = meta[key]
    try:
        if kind is int and (isinstance(value, bool) or int(value) != value):
            raise TypeError
        return kind(value)
    except (TypeError, ValueError):
        raise GGUFError(f"{path}: metadata {key!r} = {value!r} is not a valid {kind.__name__}") \
            from None


def config_from_metadata(meta: dict, path, vocab_size: int, tied: bool) -> model.ModelConfig:
    arch = meta.get("general.architecture")
    if arch != "llama":
        raise GGUFError(f"{path}: architecture {arch!r} is not supported (only 'llama')")
    scaling = meta.get("llama.rope.scaling.type")
    if scaling not in (None, "none"):
        raise GGUFError(f"{path}: rope scaling {scaling!r} is not supported")
    d_model = _get(meta, "llama.embedding_length", path)
    n_heads = _get(meta, "llama.attention.head_count", path)
    fields = dict(
        vocab_size=vocab_size,
        d_model=d_model,
        n_layers=_get(meta, "llama.block_count", path),
        n_heads=n_heads,
        n_kv_heads=_get(meta, "llama.attention.head_count_kv", path, default=n_heads),
        d_ff=_get(meta, "llama.feed_forward_length", path),
        max_seq_len=_get(meta, "llama.context_length", path),
        rope_theta=_get(meta, "llama.rope.freq_base", path, float, default=10000.0),
        norm_eps=_get(meta, "llama.attention.layer_norm_rms_epsilon", path, float),
        tie_embeddings=tied,
    )
    try:
        cfg = model.ModelConfig(**fields)
    except model.ConfigError as e:
        raise GGUFError(f"{path}: unsupported model shape: {e}") from None
    rope_dims = meta.get("llama.rope.dimension_count", cfg.head_dim)
    if rope_dims != cfg.head_dim:
        raise GGUFError(f"{path}: partial rotary embeddings (rope.dimension_count={rope_dims}, "
                        f"head_dim={cfg.head_dim}) are not supported")
    return cfg


def tokenizer_from_metadata(meta: dict, path):
    """(tiktoken.Encoding, bos_id, eos_ids, add_bos) from the tokenizer.ggml.* keys."""
    kind = meta.get("tokenizer.ggml.model")
    if kind != "gpt2":
        raise GGUFError(f"{path}: tokenizer model {kind!r} is not supported (only byte-level "
                        "BPE, 'gpt2'; SentencePiece 'llama' tokenizers cannot be tiktoken "
                        "encodings)")
    tokens = meta.get("tokenizer.ggml.tokens")
    merges = meta.get("tokenizer.ggml.merges")
    if not isinstance(tokens, list) or not isinstance(merges, list):
        raise GGUFError(f"{path}: tokenizer.ggml.tokens and tokenizer.ggml.merges must be lists")
    types = meta.get("tokenizer.ggml.token_type", [1] * len(tokens))
    if len(types) != len(tokens):
        raise GGUFError(f"{path}: {len(types)} token types for {len(tokens)} tokens")
    pairs = []
    for i, merge in enumerate(merges):
        parts = merge.split(" ")
        if len(parts) != 2:
            raise GGUFError(f"{path}: merge {i} {merge!r} is not two tokens separated by a space")
        pairs.append((parts[0], parts[1]))
    special_ids = {i for i, t in enumerate(types) if t not in PLAIN_TOKEN_TYPES}
    try:
        pattern = hf_bpe.pattern_for_gguf_pre(meta.get("tokenizer.ggml.pre"), str(path))
        enc = hf_bpe.to_tiktoken(f"gguf:{path}", tokens, pairs, special_ids, pattern, str(path))
    except hf_bpe.TokenizerError as e:
        raise GGUFError(str(e)) from None
    bos = meta.get("tokenizer.ggml.bos_token_id")
    eos = meta.get("tokenizer.ggml.eos_token_id")
    eos_ids = [i for i in (eos, meta.get("tokenizer.ggml.eot_token_id")) if i is not None]
    # llama.cpp adds BOS unless the file says not to.
    add_bos = bool(meta.get("tokenizer.ggml.add_bos_token", True)) and bos is not None
    return enc, bos, sorted(set(eos_ids)), add_bos


def load_gguf(path) -> dict:
    """Everything `infer.Model` needs from a GGUF file (see infer.load)."""
    reader = open_reader(path)
    meta = read_metadata(reader, path)
    tensors = {t.name: t for t in reader.tensors}
    if "rope_freqs.weight" in tensors:
        # Llama 3.1+ scales each rotary frequency by this tensor; our rotary embeddings do
        # not, so loading it would give wrong logits without any error.
        raise GGUFError(f"{path}: tensor 'rope_freqs.weight' (Llama 3 rope scaling: a factor "
                        "per rotary frequency) is not supported; only plain rotary "
                        "embeddings are, as for Hugging Face models with rope_scaling")
    if "token_embd.weight" not in tensors:
        raise GGUFError(f"{path}: tensor 'token_embd.weight' is missing")
    vocab_size = int(tensors["token_embd.weight"].shape[-1])
    tied = "output.weight" not in tensors
    cfg = config_from_metadata(meta, path, vocab_size, tied)
    enc, bos, eos_ids, add_bos = tokenizer_from_metadata(meta, path)
    if hf_bpe.vocab_size(enc) > cfg.vocab_size:
        raise GGUFError(f"{path}: tokenizer has {hf_bpe.vocab_size(enc)} tokens but the embedding only "
                        f"{cfg.vocab_size} rows")
    blocks = {name.split(".")[1] for name in tensors if name.startswith("blk.")}
    if len(blocks) != cfg.n_layers or blocks != {str(i) for i in range(cfg.n_layers)}:
        raise GGUFError(f"{path}: llama.block_count is {cfg.n_layers} but the file has tensors "
                        f"for {len(blocks)} blocks")
    names = hf_layout.gguf_to_hf_names(cfg.n_layers)
    unknown = sorted(set(tensors) - set(names))
    if unknown:
        raise GGUFError(f"{path}: unexpected tensor(s) {unknown[:5]} for a llama model")
    hf = {}
    # A progress bar on a terminal only (disable=None): dequantising takes seconds on a laptop.
    for gguf_name, hf_name in tqdm(names.items(), desc=f"loading {Path(path).name}",
                                   unit="tensor", disable=None, leave=False):
        if gguf_name in tensors:
            w = read_tensor(reader, tensors[gguf_name], path)
            if gguf_name.endswith("attn_q.weight"):
                w = _unpermute(w, cfg.n_heads, gguf_name, path)
            elif gguf_name.endswith("attn_k.weight"):
                w = _unpermute(w, cfg.n_kv_heads, gguf_name, path)
            hf[hf_name] = w
    hf_layout.check_hf_tensors(hf, cfg, str(path), error=GGUFError)
    return dict(config=cfg, params=hf_layout.params_from_hf(hf, cfg), tokenizer=enc,
                chat_template=meta.get("tokenizer.chat_template"), bos_id=bos, eos_ids=eos_ids,
                add_bos=add_bos, metadata={k: v for k, v in meta.items()
                                           if not k.startswith("tokenizer.ggml.")})


def _unpermute(w: np.ndarray, n_heads: int, name: str, path) -> np.ndarray:
    if w.ndim != 2 or w.shape[0] % (2 * n_heads):
        raise GGUFError(f"{path}: tensor {name!r} shape {w.shape} does not split into "
                        f"{n_heads} heads of even size")
    return hf_layout.gguf_unpermute(w, n_heads)
