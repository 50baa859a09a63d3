"""Byte-level BPE tokenizers (GPT-2 style, as in GGUF files and Hugging Face tokenizer.json) as
tiktoken encodings, and back.

Both file formats spell every token as text through GPT-2's byte-to-unicode table and list the
merges in priority order. tiktoken instead keys tokens by their bytes and merges the adjacent pair
whose concatenation has the lowest rank, where the rank is also the token id. The two agree when
the ids of merged tokens increase with merge priority, which `to_tiktoken` checks rather than
assumes. The pre-tokeniser (the regex that cuts text into words before BPE) is named by GGUF
files and described structurally by tokenizer.json; both become one tiktoken pattern here.
"""

from __future__ import annotations

import functools

import tiktoken


class TokenizerError(ValueError):
    """A tokenizer description cannot be represented faithfully; the message says why."""


# GPT-2's word split, with the final `\s+` that HF's ByteLevel regex has (tiktoken drops text
# that no alternative matches, so every character must be covered).
GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
# GPT-2's split after isolating every digit (HF: Sequence[Digits(individual), ByteLevel];
# llama.cpp: "smollm", "starcoder", ...). Digits end a whitespace run as the end of text would,
# hence the lookahead `(?![^\s\p{N}])` in place of `(?!\S)`.
DIGITS_GPT2_PATTERN = (r"""\p{N}|'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?[^\s\p{L}\p{N}]+"""
                       r"""|\s+(?![^\s\p{N}])|\s+""")
# Llama 3 / GPT-4 (cl100k) split.
LLAMA3_PATTERN = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"""
                  r"""| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+""")

# llama.cpp's names for pre-tokenisers (GGUF key tokenizer.ggml.pre) that we can express.
GGUF_PRE_PATTERNS = {
    "default": GPT2_PATTERN,
    "gpt2": GPT2_PATTERN,
    "gpt-2": GPT2_PATTERN,
    "mpt": GPT2_PATTERN,
    "olmo": GPT2_PATTERN,
    "smollm": DIGITS_GPT2_PATTERN,
    "starcoder": DIGITS_GPT2_PATTERN,
    "refact": DIGITS_GPT2_PATTERN,
    "codeshell": DIGITS_GPT2_PATTERN,
    "llama-bpe": LLAMA3_PATTERN,
    "llama3": LLAMA3_PATTERN,
    "dbrx": LLAMA3_PATTERN,
}


def pattern_for_gguf_pre(pre: str | None, where: str) -> str:
    if pre is None:
        pre = "default"
    if pre not in GGUF_PRE_PATTERNS:
        raise TokenizerError(f"{where}: pre-tokenizer {pre!r} is not supported; supported: "
                             f"{', '.join(sorted(GGUF_PRE_PATTERNS))}")
    return GGUF_PRE_PATTERNS[pre]


def gguf_pre_for_pattern(pattern: str) -> str | None:
    """The llama.cpp pre-tokenizer name whose split equals `pattern`, or None."""
    canonical = {GPT2_PATTERN: "gpt2", DIGITS_GPT2_PATTERN: "smollm", LLAMA3_PATTERN: "llama-bpe"}
    try:  # the twofiles tokenizer's pattern is GPT-4's split spelled with possessive quantifiers
        from infer.formats.tokenizer_file import PATTERN as TWOFILES_PATTERN

        canonical[TWOFILES_PATTERN] = "llama-bpe"
    except ImportError:
        pass
    return canonical.get(pattern)


def byte_to_char() -> dict[int, str]:
    """GPT-2's reversible map from bytes to printable unicode characters (one copy, in
    train.tokenizer, shared by the trainer and the converters here)."""
    from infer.formats.tokenizer_file import byte_to_unicode

    return byte_to_unicode()


@functools.lru_cache(maxsize=1)
def char_to_byte() -> dict[str, int]:
    return {c: b for b, c in byte_to_char().items()}


def token_text_to_bytes(text: str) -> bytes | None:
    """The bytes a byte-level token spells, or None if it is not byte-level text."""
    table = char_to_byte()
    try:
        return bytes(table[c] for c in text)
    except KeyError:
        return None


def token_bytes_to_text(data: bytes) -> str:
    table = byte_to_char()
    return "".join(table[b] for b in data)


def to_tiktoken(name: str, tokens: list[str], merges: list[tuple[str, str]],
                special_ids: set[int], pattern: str, where: str) -> tiktoken.Encoding:
    """A tiktoken Encoding whose ids equal the file's ids.

    tokens: token text by id; merges: in priority order; special_ids: ids of control/added
    tokens matched as whole strings (never produced by BPE).
    """
    ranks: dict[bytes, int] = {}
    specials: dict[str, int] = {}
    for token_id, text in enumerate(tokens):
        if token_id in special_ids:
            specials[text] = token_id
            continue
        data = token_text_to_bytes(text)
        if data is None or not data:
            raise TokenizerError(f"{where}: token {token_id} {text!r} is not byte-level BPE text "
                                 "and is not marked special")
        if data in ranks:
            raise TokenizerError(f"{where}: tokens {ranks[data]} and {token_id} are the same "
                                 f"bytes {data!r}")
        ranks[data] = token_id
    _check_merge_order(ranks, tokens, merges, where)
    return make_encoding(name, pattern, ranks, specials, len(tokens))


def make_encoding(name: str, pattern: str, ranks: dict[bytes, int], specials: dict[str, int],
                  n_ids: int) -> tiktoken.Encoding:
    """A tiktoken Encoding over ids 0..n_ids-1, dropping bytes that have no token."""
    missing = [bytes([b]) for b in range(256) if bytes([b]) not in ranks]
    if not missing:
        return tiktoken.Encoding(name=name, pat_str=pattern, mergeable_ranks=ranks,
                                 special_tokens=specials)
    first = n_ids
    ranks = dict(ranks)
    ranks.update({b: first + i for i, b in enumerate(missing)})
    return ByteDroppingEncoding(name=name, pat_str=pattern, mergeable_ranks=ranks,
                                special_tokens=specials, first_dropped=first)


class ByteDroppingEncoding(tiktoken.Encoding):
    """A vocabulary without some single bytes (SmolLM2 lacks 21 control bytes).

    tiktoken needs every byte to be a token; Hugging Face's byte-level BPE (no unk token, no
    byte fallback) silently drops a byte its vocabulary lacks, and so do we: the missing bytes
    get ids from `first_dropped` up, which encoding removes. They cannot be part of any merge,
    so dropping them afterwards gives the same ids as dropping them first.
    """

    def __init__(self, *, first_dropped: int, **kwargs):
        super().__init__(**kwargs)
        self.first_dropped = first_dropped

    def encode_ordinary(self, text: str) -> list[int]:
        return [i for i in super().encode_ordinary(text) if i < self.first_dropped]

    def encode(self, text: str, **kwargs) -> list[int]:
        return [i for i in super().encode(text, **kwargs) if i < self.first_dropped]

    def encode_ordinary_batch(self, texts, **kwargs) -> list[list[int]]:
        return [self.encode_ordinary(t) for t in texts]

    def encode_batch(self, texts, **kwargs) -> list[list[int]]:
        return [self.encode(t, **kwargs) for t in texts]


def vocab_size(enc: tiktoken.Encoding) -> int:
    """Number of real token ids (excluding the placeholder ids of dropped bytes)."""
    return getattr(enc, "first_dropped", enc.n_vocab)


def _check_merge_order(ranks: dict[bytes, int], tokens: list[str],
                       merges: list[tuple[str, str]], where: str) -> None:
    """tiktoken's merge priority is the merged token's id: it must rise with the merge index."""
    last = -1
    for i, (left, right) in enumerate(merges):
        merged = token_text_to_bytes(left + right)
        if merged is None or merged not in ranks:
            raise TokenizerError(f"{where}: merge {i} ({left!r} {right!r}) makes a token that "
                                 "is not in the vocabulary")
        rank = ranks[merged]
        if rank <= last:
            raise TokenizerError(
                f"{where}: merge {i} ({left!r} {right!r}) makes token {rank}, not after the "
                f"previous merge's token {last}; tiktoken ranks cannot express this merge order")
        last = rank


def from_tiktoken(enc: tiktoken.Encoding) -> tuple[list[str], list[tuple[str, str]], set[int]]:
    """(token text by id, merges in priority order, special ids) for GGUF / tokenizer.json.

    Ids missing from the encoding (gaps) become placeholder special tokens so that ids are kept.
    """
    n_vocab = vocab_size(enc)
    # tiktoken keeps no public accessor for the rank table
    ranks = {b: r for b, r in enc._mergeable_ranks.items() if r < n_vocab}
    specials = enc._special_tokens
    tokens: list[str | None] = [None] * n_vocab
    for data, rank in ranks.items():
        tokens[rank] = token_bytes_to_text(data)
    special_ids = set()
    for text, token_id in specials.items():
        tokens[token_id] = text
        special_ids.add(token_id)
    for token_id, text in enumerate(tokens):
        if text is None:
            tokens[token_id] = f"<|unused_{token_id}|>"
            special_ids.add(token_id)
    merges = []
    for data, rank in sorted(ranks.items(), key=lambda kv: kv[1]):
        if len(data) < 2:
            continue
        left, right = _split_token(data, rank, ranks)
        merges.append((token_bytes_to_text(left), token_bytes_to_text(right)))
    return tokens, merges, special_ids


def _split_token(data: bytes, rank: int, ranks: dict[bytes, int]) -> tuple[bytes, bytes]:
    """The last merge that builds `data`: run BPE on its bytes with only lower-ranked merges."""
    parts = [bytes([b]) for b in data]
    while len(parts) > 2:
        best, best_rank = None, None
        for i in range(len(parts) - 1):
            r = ranks.get(parts[i] + parts[i + 1])
            if r is not None and r < rank and (best_rank is None or r < best_rank):
                best, best_rank = i, r
        if best is None:
            break
        parts[best:best + 2] = [parts[best] + parts[best + 1]]
    if len(parts) != 2:
        raise TokenizerError(f"token {rank} ({data!r}) cannot be built by lower-ranked merges")
    return parts[0], parts[1]
