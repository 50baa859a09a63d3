"""Hugging Face tokenizer.json (byte-level BPE) <-> tiktoken.Encoding.

Reading understands the pre-tokenisers byte-level BPE models use: ByteLevel with its GPT-2
regex, Digits(individual) followed by ByteLevel (SmolLM2, StarCoder), and a Split regex followed
by ByteLevel without regex (Llama 3, and what `write_tokenizer_json` produces). Anything else is
refused with the reason, rather than tokenised differently.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import tiktoken

from infer.formats import hf_bpe
from infer.formats.hf_bpe import TokenizerError


def _pattern(pre: dict | None, where: str) -> str:
    if pre is None:
        raise TokenizerError(f"{where}: no pre_tokenizer; byte-level BPE needs ByteLevel")
    kind = pre.get("type")
    if kind == "ByteLevel":
        _check_byte_level(pre, where, needs_regex=True)
        return hf_bpe.GPT2_PATTERN
    if kind == "Sequence":
        steps = pre.get("pretokenizers", [])
        kinds = [s.get("type") for s in steps]
        if kinds == ["Digits", "ByteLevel"] and steps[0].get("individual_digits"):
            _check_byte_level(steps[1], where, needs_regex=True)
            return hf_bpe.DIGITS_GPT2_PATTERN
        if kinds == ["Split", "ByteLevel"]:
            split = steps[0]
            regex = (split.get("pattern") or {}).get("Regex")
            if regex is None or split.get("behavior") != "Isolated" or split.get("invert"):
                raise TokenizerError(f"{where}: Split pre-tokenizer {split} is not an isolated "
                                     "regex split")
            _check_byte_level(steps[1], where, needs_regex=False)
            return regex
        raise TokenizerError(f"{where}: pre-tokenizer sequence {kinds} is not supported")
    raise TokenizerError(f"{where}: pre-tokenizer {kind!r} is not supported")


def _check_byte_level(step: dict, where: str, needs_regex: bool) -> None:
    if step.get("add_prefix_space"):
        raise TokenizerError(f"{where}: ByteLevel(add_prefix_space=true) is not supported")
    if bool(step.get("use_regex", True)) != needs_regex:
        raise TokenizerError(f"{where}: ByteLevel use_regex={step.get('use_regex')} is not "
                             "supported in this position")


def read_tokenizer_json(path) -> tiktoken.Encoding:
    """A tiktoken.Encoding with the same ids as the Hugging Face tokenizer in `path`."""
    where = str(path)
    try:
        spec = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise TokenizerError(f"{where}: cannot read tokenizer JSON: {e}") from None
    bpe = spec.get("model") or {}
    if bpe.get("type") != "BPE":
        raise TokenizerError(f"{where}: tokenizer model {bpe.get('type')!r} is not supported "
                             "(only byte-level BPE)")
    if spec.get("normalizer") is not None:
        raise TokenizerError(f"{where}: tokenizers with a normalizer are not supported")
    vocab: dict[str, int] = dict(bpe.get("vocab", {}))
    added = {t["content"]: int(t["id"]) for t in spec.get("added_tokens", [])}
    n = max(list(vocab.values()) + list(added.values())) + 1
    tokens: list[str | None] = [None] * n
    for text, i in list(vocab.items()) + list(added.items()):
        tokens[i] = text
    holes = [i for i, t in enumerate(tokens) if t is None]
    for i in holes:
        tokens[i] = f"<|unused_{i}|>"
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m)
              for m in bpe.get("merges", [])]
    pattern = _pattern(spec.get("pre_tokenizer"), where)
    return hf_bpe.to_tiktoken(f"hf:{Path(path).parent.name}", tokens, merges,
                              set(added.values()) | set(holes), pattern, where)


def write_tokenizer_json(enc: tiktoken.Encoding, path, *, bos: str | None = None) -> None:
    """tokenizer.json for `enc` (HF `tokenizers` loads it and gives the same ids).

    bos: a special token the post-processor puts before every encoded text (None: nothing).
    """
    tokens, merges, special_ids = hf_bpe.from_tiktoken(enc)
    spec = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [{"id": i, "content": tokens[i], "single_word": False,
                          "lstrip": False, "rstrip": False, "normalized": False,
                          "special": True} for i in sorted(special_ids)],
        "normalizer": None,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": enc._pat_str}, "behavior": "Isolated",
             "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
             "use_regex": False}]},
        "post_processor": _post_processor(bos, enc),
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True,
                    "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None,
                  "continuing_subword_prefix": None, "end_of_word_suffix": None,
                  "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": {tokens[i]: i for i in range(len(tokens)) if i not in special_ids},
                  "merges": [[a, b] for a, b in merges]},
    }
    _atomic_write_text(path, json.dumps(spec, ensure_ascii=False))


def _post_processor(bos: str | None, enc) -> dict | None:
    if bos is None:
        return None
    bos_id = enc.encode_single_token(bos)
    return {"type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": bos, "type_id": 0}},
                       {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": bos, "type_id": 0}},
                     {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": bos, "type_id": 1}},
                     {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {bos: {"id": bos, "ids": [bos_id], "tokens": [bos]}}}


def _atomic_write_text(path, text: str) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    finally:  # a failed write leaves no temporary file
        if os.path.exists(tmp):
            os.remove(tmp)
