"""The twofiles params file: one flat little-endian file that `run.c` (the second file) runs.

Layout (all integers little-endian; the runner reads exactly this):

    offset  type        field
    0       char[4]     magic "TWOF"
    4       uint32      version (1)
    8       uint32 x 8  vocab_size, d_model, n_layers, n_heads, n_kv_heads, d_ff, max_seq_len,
                        tie_embeddings (0 or 1)
    40      float64     rope_theta
    48      float64     norm_eps
    56      int32       bos_id (-1: none)
    60      int32       eos_id (-1: none); generation stops when it is produced
    64      uint32      add_bos (1: text prompts start with bos_id)
    68      uint32      0 (padding)
    72      uint64      weights_offset (256)
    80      uint64      tokenizer_offset
    88..255             zero

    weights (float32, C order, every matrix [out, in] so that y = W x reads rows):
      embed       [V, D]
      attn_norm   [L, D]
      wq          [L, H*K, D]
      wk          [L, G*K, D]
      wv          [L, G*K, D]
      wo          [L, D, H*K]
      mlp_norm    [L, D]
      w_gate      [L, F, D]
      w_up        [L, F, D]
      w_down      [L, D, F]
      final_norm  [D]
      unembed     [V, D]   (only when tie_embeddings is 0)

    tokenizer:
      uint32 n_tokens, uint32 pattern_len, pattern (UTF-8 regex of the pre-tokenizer),
      then per token id 0..n_tokens-1: uint8 is_special, uint32 n_bytes, bytes.

Rotary embeddings follow the Hugging Face convention (rotate_half over the two halves of each
head), RMSNorm is x / sqrt(mean(x^2) + eps) * gain, the MLP is w_down(silu(w_gate x) * w_up x).
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import tiktoken

import model
from infer.formats import hf_bpe

MAGIC = b"TWOF"
VERSION = 1
HEADER_BYTES = 256
_HEADER = struct.Struct("<4sI8IddiiIIQQ")
RUNNER = Path(__file__).with_name("run.c")


class TwofilesError(ValueError):
    """A twofiles params file is malformed; the message names the file and the problem."""


def weight_arrays(params: dict, cfg: model.ModelConfig) -> list[np.ndarray]:
    """The weights in file order, float32 C order (see the module docstring)."""
    from infer.formats.hf_layout import hf_from_params

    hf = hf_from_params(params, cfg)
    L = cfg.n_layers

    def stacked(suffix):
        return np.stack([hf[f"model.layers.{i}.{suffix}"] for i in range(L)])

    arrays = [hf["model.embed_tokens.weight"], stacked("input_layernorm.weight"),
              stacked("self_attn.q_proj.weight"), stacked("self_attn.k_proj.weight"),
              stacked("self_attn.v_proj.weight"), stacked("self_attn.o_proj.weight"),
              stacked("post_attention_layernorm.weight"), stacked("mlp.gate_proj.weight"),
              stacked("mlp.up_proj.weight"), stacked("mlp.down_proj.weight"),
              hf["model.norm.weight"]]
    if not cfg.tie_embeddings:
        arrays.append(hf["lm_head.weight"])
    return [np.ascontiguousarray(a, dtype="<f4") for a in arrays]


def tokenizer_bytes(enc: tiktoken.Encoding) -> bytes:
    specials = {i: s.encode("utf-8") for s, i in enc._special_tokens.items()}
    by_id = {i: b for b, i in enc._mergeable_ranks.items()}
    pattern = enc._pat_str.encode("utf-8")
    n_vocab = hf_bpe.vocab_size(enc)
    parts = [struct.pack("<II", n_vocab, len(pattern)), pattern]
    for i in range(n_vocab):
        special = i in specials or i not in by_id
        data = specials.get(i, by_id.get(i, f"<|unused_{i}|>".encode()))
        parts.append(struct.pack("<BI", int(special), len(data)) + data)
    return b"".join(parts)


def write(path, cfg: model.ModelConfig, params: dict, enc: tiktoken.Encoding, *,
          bos_id: int | None, eos_id: int | None, add_bos: bool) -> None:
    """Writes the params file to `path`, in place (infer.formats.export writes it under a
    temporary name and renames it when whole)."""
    arrays = weight_arrays(params, cfg)
    n_weight_bytes = sum(a.nbytes for a in arrays)
    header = _HEADER.pack(
        MAGIC, VERSION, cfg.vocab_size, cfg.d_model, cfg.n_layers, cfg.n_heads, cfg.n_kv_heads,
        cfg.d_ff, cfg.max_seq_len, int(cfg.tie_embeddings), float(cfg.rope_theta),
        float(cfg.norm_eps), -1 if bos_id is None else int(bos_id),
        -1 if eos_id is None else int(eos_id), int(add_bos), 0, HEADER_BYTES,
        HEADER_BYTES + n_weight_bytes)
    with open(path, "wb") as f:
        f.write(header.ljust(HEADER_BYTES, b"\0"))
        for a in arrays:
            f.write(a.tobytes())
        f.write(tokenizer_bytes(enc))


def read(path) -> dict:
    """(config, params tree, tokenizer, bos, eos, add_bos) of a params file, checked."""
    data = Path(path).read_bytes()
    if len(data) < HEADER_BYTES or data[:4] != MAGIC:
        raise TwofilesError(f"{path}: not a twofiles params file (too short or bad magic)")
    (_, version, V, D, L, H, G, F, S, tied, theta, eps, bos, eos, add_bos, _,
     w_off, t_off) = _HEADER.unpack_from(data)
    if version != VERSION:
        raise TwofilesError(f"{path}: version {version} is not supported (expected {VERSION})")
    try:
        cfg = model.ModelConfig(vocab_size=V, d_model=D, n_layers=L, n_heads=H, n_kv_heads=G,
                                d_ff=F, max_seq_len=S, rope_theta=theta, norm_eps=eps,
                                tie_embeddings=bool(tied))
    except model.ConfigError as e:
        raise TwofilesError(f"{path}: bad header: {e}") from None
    K = D // H
    shapes = [(V, D), (L, D), (L, H * K, D), (L, G * K, D), (L, G * K, D), (L, D, H * K),
              (L, D), (L, F, D), (L, F, D), (L, D, F), (D,)] + ([] if tied else [(V, D)])
    total = sum(int(np.prod(s)) * 4 for s in shapes)
    if w_off != HEADER_BYTES or t_off != w_off + total or t_off + 8 > len(data):
        raise TwofilesError(f"{path}: weights/tokenizer offsets do not match the header shapes "
                            "(truncated or corrupted)")
    arrays, offset = [], w_off
    for shape in shapes:
        n = int(np.prod(shape))
        arrays.append(np.frombuffer(data, "<f4", n, offset).reshape(shape).astype(np.float32))
        offset += 4 * n
    enc = _read_tokenizer(data, t_off, path)
    return dict(config=cfg, params=_params_from_arrays(arrays, cfg), tokenizer=enc,
                bos_id=None if bos < 0 else bos, eos_id=None if eos < 0 else eos,
                add_bos=bool(add_bos))


def _read_tokenizer(data: bytes, offset: int, path) -> tiktoken.Encoding:
    try:
        n, plen = struct.unpack_from("<II", data, offset)
        offset += 8
        pattern = data[offset:offset + plen].decode("utf-8")
        offset += plen
        ranks, specials = {}, {}
        for i in range(n):
            special, size = struct.unpack_from("<BI", data, offset)
            offset += 5
            token = data[offset:offset + size]
            offset += size
            if special:
                specials[token.decode("utf-8")] = i
            else:
                ranks[token] = i
    except (struct.error, UnicodeDecodeError) as e:
        raise TwofilesError(f"{path}: tokenizer section is malformed: {e}") from None
    return hf_bpe.make_encoding(f"twofiles:{Path(path).name}", pattern, ranks, specials, n)


def _params_from_arrays(arrays: list[np.ndarray], cfg: model.ModelConfig) -> dict:
    D, H, G, K = cfg.d_model, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
    L = cfg.n_layers
    embed, an, wq, wk, wv, wo, mn, wg, wu, wd, fn = arrays[:11]
    params = {
        "embed": embed,
        "layers": {
            "attn_norm": an,
            "wq": wq.transpose(0, 2, 1).reshape(L, D, H, K),
            "wk": wk.transpose(0, 2, 1).reshape(L, D, G, K),
            "wv": wv.transpose(0, 2, 1).reshape(L, D, G, K),
            "wo": wo.transpose(0, 2, 1).reshape(L, H, K, D),
            "mlp_norm": mn,
            "w_gate": wg.transpose(0, 2, 1),
            "w_up": wu.transpose(0, 2, 1),
            "w_down": wd.transpose(0, 2, 1),
        },
        "final_norm": fn,
    }
    if not cfg.tie_embeddings:
        params["unembed"] = arrays[11].T
    return params


def load_model_fields(path) -> dict:
    """Fields of infer.Model for a params file (chat: infer.chat.render if it has the twofiles
    chat tokens)."""
    r = read(path)
    return dict(config=r["config"], params=r["params"], tokenizer=r["tokenizer"],
                chat_template=None, bos_id=r["bos_id"],
                eos_ids=[] if r["eos_id"] is None else [r["eos_id"]], add_bos=r["add_bos"])
