"""The twofiles tokenizer file: read, written and used through `tiktoken.Encoding`.

Byte-level BPE stored as tiktoken "mergeable ranks", where the id of a token is its rank and
merging always picks the lowest-ranked pair. The 256 single bytes take ranks 0..255, so any byte
string is encodable and decoding is exact. The chat special tokens come after the ranks.
Training lives in `train.tokenizer`; reading lives here, so that running a model never needs
the trainer.
File format (JSON, written atomically; read back by `load`):

    {"format": "twofiles-bpe", "version": 1,
     "fingerprint": "<16 hex digits>",   # sha256 of pattern, ranks and specials (see below)
     "vocab_size": N,                    # len(ranks) + len(special_tokens)
     "pattern": "<pre-tokenisation regex>",
     "special_tokens": {"<|bos|>": id, ...},
     "ranks": ["<base64 of token bytes>", ...]}   # list index = rank = token id

The fingerprint is recorded by token shards and checkpoints, so a model is never silently paired
with a different tokenizer; `load` recomputes it to catch a damaged file.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import os
import tempfile
from pathlib import Path

import tiktoken

FORMAT = "twofiles-bpe"
VERSION = 1

# The chat control tokens, in id order after the mergeable ranks. Only `infer.chat.render`
# emits them; user text that spells one of them is encoded as ordinary text.
SPECIAL_TOKENS = (
    "<|bos|>",
    "<|user_start|>", "<|user_end|>",
    "<|assistant_start|>", "<|assistant_end|>",
    "<|system_start|>", "<|system_end|>",
    "<|tool_call_start|>", "<|tool_call_end|>",
    "<|tool_output_start|>", "<|tool_output_end|>",
)

# GPT-4's (cl100k) split pattern: contractions, words with one leading non-letter, numbers of
# up to three digits, punctuation runs, newlines, and whitespace that stays off the next word.
# Written without `\s++$` so that Oniguruma (HF, training) and fancy-regex (tiktoken, encoding)
# split identically: their `$` differs at line ends.
PATTERN = (r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,3}"""
           r"""| ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+""")

MIN_VOCAB_SIZE = 256 + len(SPECIAL_TOKENS) + 1  # all bytes, the specials and at least one merge


class TokenizerError(ValueError):
    """A tokenizer file or training request that cannot be used; the message says why."""


@functools.lru_cache(maxsize=1)
def byte_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from bytes to printable characters, which HF's ByteLevel uses."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
                 *range(ord("®"), ord("ÿ") + 1)]
    table, extra = {}, 0
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table



def special_ids(n_ranks: int) -> dict[str, int]:
    return {name: n_ranks + i for i, name in enumerate(SPECIAL_TOKENS)}


def encoding(ranks: dict[bytes, int], pattern: str = PATTERN, name: str = "twofiles"
             ) -> tiktoken.Encoding:
    """A tiktoken Encoding over `ranks` with the chat special tokens after them."""
    return tiktoken.Encoding(name=name, pat_str=pattern, mergeable_ranks=ranks,
                             special_tokens=special_ids(len(ranks)))


def _fingerprint_parts(ranks: dict[bytes, int], pattern: str, specials: dict[str, int]) -> str:
    ordered = sorted(ranks.items(), key=lambda kv: kv[1])
    if [r for _, r in ordered] != list(range(len(ordered))):
        raise TokenizerError("ranks must be the ids 0..n-1 without gaps")
    h = hashlib.sha256()
    h.update(json.dumps({"pattern": pattern, "special_tokens": specials}, sort_keys=True).encode())
    for token, _ in ordered:
        h.update(len(token).to_bytes(4, "little") + token)
    return h.hexdigest()[:16]


def fingerprint(enc_or_path) -> str:
    """The tokenizer's identity: 16 hex digits over its pattern, ranks and special tokens."""
    if isinstance(enc_or_path, (str, os.PathLike)):
        enc_or_path = load(enc_or_path)
    enc = enc_or_path
    return _fingerprint_parts(enc._mergeable_ranks, enc._pat_str, dict(enc._special_tokens))


def _atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def to_doc(enc_or_ranks, pattern: str = PATTERN) -> dict:
    """The tokenizer file's JSON document (format in the module docstring) of an Encoding made
    by `encoding`/`load`, or of mergeable ranks and a pattern."""
    if isinstance(enc_or_ranks, tiktoken.Encoding):
        ranks, pattern = enc_or_ranks._mergeable_ranks, enc_or_ranks._pat_str
    else:
        ranks = enc_or_ranks
    specials = special_ids(len(ranks))
    ordered = sorted(ranks, key=ranks.__getitem__)
    return {"format": FORMAT, "version": VERSION,
            "fingerprint": _fingerprint_parts(ranks, pattern, specials),
            "vocab_size": len(ranks) + len(specials), "pattern": pattern,
            "special_tokens": specials,
            "ranks": [base64.b64encode(t).decode("ascii") for t in ordered]}


def save(path, ranks: dict[bytes, int], pattern: str = PATTERN) -> str:
    """Write the tokenizer file (format in the module docstring); returns its fingerprint."""
    doc = to_doc(ranks, pattern)
    _atomic_write_text(Path(path), json.dumps(doc, ensure_ascii=False, indent=0) + "\n")
    return doc["fingerprint"]


def load(path) -> tiktoken.Encoding:
    """Read a tokenizer file written by `save`; clear errors for anything else."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"tokenizer file {str(path)!r} not found; train one with "
            "`python -m train tokenizer --input FILES --vocab-size N --out FILE`")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise TokenizerError(f"{path}: not a twofiles tokenizer file (not JSON: {e})") from None
    return from_doc(doc, str(path))


def from_doc(doc, where: str) -> tiktoken.Encoding:
    """The tokenizer of a parsed tokenizer file (`where` names it in errors): a file's JSON, or
    the copy a checkpoint keeps."""
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise TokenizerError(f"{where}: not a twofiles tokenizer file (expected "
                             f"\"format\": \"{FORMAT}\")")
    if doc.get("version") != VERSION:
        raise TokenizerError(f"{where}: tokenizer format version {doc.get('version')!r}; this "
                             f"code reads version {VERSION}")
    try:
        ranks = {base64.b64decode(t, validate=True): i for i, t in enumerate(doc["ranks"])}
        specials, pattern = doc["special_tokens"], doc["pattern"]
    except (KeyError, TypeError, ValueError) as e:
        raise TokenizerError(f"{where}: damaged tokenizer file ({type(e).__name__}: {e})") from None
    if len(ranks) != len(doc["ranks"]) or any(bytes([b]) not in ranks for b in range(256)):
        raise TokenizerError(f"{where}: damaged tokenizer file (ranks repeat a token or miss "
                             "a byte)")
    if specials != special_ids(len(ranks)):
        raise TokenizerError(f"{where}: special tokens {list(specials)} do not match this "
                             f"code's {list(SPECIAL_TOKENS)} placed after the ranks")
    fp = _fingerprint_parts(ranks, pattern, specials)
    if fp != doc.get("fingerprint"):
        raise TokenizerError(f"{where}: damaged tokenizer file (fingerprint {fp} != recorded "
                             f"{doc.get('fingerprint')})")
    return encoding(ranks, pattern, name=f"twofiles-{fp}")


def encode_text(enc: tiktoken.Encoding, text: str) -> list[int]:
    """Encode user text: special-token strings in it stay plain text, never control ids."""
    return enc.encode_ordinary(text)


def special_id(enc: tiktoken.Encoding, name: str) -> int:
    if name not in enc._special_tokens:
        raise TokenizerError(f"special token {name!r} is not in this tokenizer; it has "
                             f"{sorted(enc._special_tokens)}")
    return enc._special_tokens[name]


def bos_id(enc: tiktoken.Encoding) -> int:
    """The id that starts every document (and every rendered conversation)."""
    return special_id(enc, "<|bos|>")
