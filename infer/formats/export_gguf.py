"""Writes a Model as a llama-architecture GGUF file (llama.cpp and transformers read it).

Tensors: norms stay float32 (as llama.cpp's converter keeps them); matrices are f32, f16 or
q8_0 (a matrix whose rows do not split into 32-value blocks falls back to f16). Q and K rows are
permuted into llama.cpp's interleaved-rotary order. The tokenizer goes in as byte-level BPE
("gpt2") with its merges and the llama.cpp name of its pre-tokenizer; the chat template as Jinja.
"""

from __future__ import annotations

import numpy as np

from infer.formats import hf_bpe
from infer.formats import hf_layout
from infer.formats.out_files import ExportError

DTYPES = ("f32", "f16", "q8_0")
# GGUF token types
NORMAL, CONTROL = 1, 3


def _tensor_kind(dtype: str, array: np.ndarray):
    import gguf

    Q = gguf.GGMLQuantizationType
    if array.ndim == 1 or dtype == "f32":
        return Q.F32
    if dtype == "q8_0" and array.shape[-1] % 32 == 0:
        return Q.Q8_0
    return Q.F16


def _file_type(dtype: str):
    import gguf

    return {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
            "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[dtype]


def tokenizer_fields(enc, vocab_size: int, where: str):
    """(tokens, token types, merges, llama.cpp pre-tokenizer name), padded to vocab_size."""
    pre = hf_bpe.gguf_pre_for_pattern(enc._pat_str)
    if pre is None:
        raise ExportError(f"{where}: the tokenizer's pre-tokenizer pattern {enc._pat_str!r} has "
                          "no llama.cpp name, so a GGUF file could not say how to split text")
    tokens, merges, special_ids = hf_bpe.from_tiktoken(enc)
    if len(tokens) > vocab_size:
        raise ExportError(f"{where}: tokenizer has {len(tokens)} tokens but the model's "
                          f"embedding only {vocab_size}")
    # llama.cpp requires one token per embedding row: pad with unused control tokens.
    special_ids |= set(range(len(tokens), vocab_size))
    tokens += [f"<|unused_{i}|>" for i in range(len(tokens), vocab_size)]
    types = [CONTROL if i in special_ids else NORMAL for i in range(vocab_size)]
    return tokens, types, [f"{a} {b}" for a, b in merges], pre


def check_exportable(m, dtype: str, where: str) -> None:
    """Raises ExportError if `m` cannot be written as a GGUF of `dtype` (before any write)."""
    if dtype not in DTYPES:
        raise ExportError(f"GGUF dtype {dtype!r} is not supported; choose one of {DTYPES}")
    tokenizer_fields(m.tokenizer, m.config.vocab_size, where)


def write_gguf(m, path, dtype: str = "f16", chat_template: str | None = None,
               name: str = "twofiles", sampling: dict | None = None) -> None:
    """Writes `m` (an infer.Model) to `path`, in place: infer.formats.export writes it under a
    temporary name and renames it when whole. `sampling` (temperature, top_k, top_p) goes in
    as the general.sampling.* keys llama.cpp reads as defaults."""
    import gguf

    if dtype not in DTYPES:
        raise ExportError(f"GGUF dtype {dtype!r} is not supported; choose one of {DTYPES}")
    cfg = m.config
    tokens, types, merges, pre = tokenizer_fields(m.tokenizer, cfg.vocab_size, str(path))
    writer = gguf.GGUFWriter(str(path), "llama")
    try:
        writer.add_name(name)
        writer.add_context_length(cfg.max_seq_len)
        writer.add_embedding_length(cfg.d_model)
        writer.add_block_count(cfg.n_layers)
        writer.add_feed_forward_length(cfg.d_ff)
        writer.add_head_count(cfg.n_heads)
        writer.add_head_count_kv(cfg.n_kv_heads)
        writer.add_rope_dimension_count(cfg.head_dim)
        writer.add_rope_freq_base(float(cfg.rope_theta))
        writer.add_layer_norm_rms_eps(float(cfg.norm_eps))
        writer.add_vocab_size(cfg.vocab_size)
        writer.add_file_type(_file_type(dtype))
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre(pre)
        writer.add_token_list(tokens)
        writer.add_token_types(types)
        writer.add_token_merges(merges)
        if m.bos_id is not None:
            writer.add_bos_token_id(int(m.bos_id))
        if m.eos_ids:
            writer.add_eos_token_id(int(m.eos_ids[0]))
        if len(m.eos_ids) > 1:  # e.g. a twofiles model's <|assistant_end|> ends a turn
            writer.add_eot_token_id(int(m.eos_ids[1]))
        writer.add_add_bos_token(bool(m.add_bos))
        writer.add_add_eos_token(False)
        if chat_template:
            writer.add_chat_template(chat_template)
        if sampling:
            keys = gguf.Keys.General
            writer.add_float32(keys.SAMPLING_TEMP, float(sampling["temperature"]))
            writer.add_float32(keys.SAMPLING_TOP_P, float(sampling["top_p"]))
            writer.add_int32(keys.SAMPLING_TOP_K, int(sampling["top_k"]))
        for hf_name, array in hf_layout.hf_from_params(m.params, cfg).items():
            if hf_name.endswith("q_proj.weight"):
                array = hf_layout.gguf_permute(array, cfg.n_heads)
            elif hf_name.endswith("k_proj.weight"):
                array = hf_layout.gguf_permute(array, cfg.n_kv_heads)
            _add_tensor(writer, hf_layout.hf_to_gguf_name(hf_name), array, dtype)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()


def _add_tensor(writer, name: str, array: np.ndarray, dtype: str) -> None:
    import gguf

    kind = _tensor_kind(dtype, array)
    array = np.ascontiguousarray(array, np.float32)
    if kind == gguf.GGMLQuantizationType.F32:
        writer.add_tensor(name, array)
    elif kind == gguf.GGMLQuantizationType.F16:
        writer.add_tensor(name, array.astype(np.float16))
    else:
        writer.add_tensor(name, gguf.quants.quantize(array, kind), raw_dtype=kind)
