"""Training the twofiles tokenizer: byte-level BPE over a corpus, saved as tiktoken ranks.

Training uses Hugging Face `tokenizers` (its incremental BPE trainer, in Rust) over text split
by a GPT-4-style pattern; the learned merges are converted to tiktoken "mergeable ranks", where
the id of a token is its rank and merging always picks the lowest-ranked pair. The chat special
tokens come after the ranks, so `vocab_size` (ranks + specials) is exactly what was asked for.
The file format, reading and encoding are `infer.formats.tokenizer_file`'s (re-exported here
for the trainer's callers: `save`, `load`, `fingerprint`, ...).
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from infer.formats.tokenizer_file import (  # noqa: F401  (the trainer's callers use these)
    MIN_VOCAB_SIZE, PATTERN, SPECIAL_TOKENS, TokenizerError, bos_id, byte_to_unicode,
    encode_text, encoding, fingerprint, load, save, special_id, special_ids)




def _check_vocab_size(vocab_size: int) -> int:
    if not isinstance(vocab_size, int) or vocab_size < MIN_VOCAB_SIZE:
        raise TokenizerError(
            f"vocab size {vocab_size!r} is too small: need at least {MIN_VOCAB_SIZE} "
            f"(256 byte tokens + {len(SPECIAL_TOKENS)} special tokens + 1 merge)")
    return vocab_size


def _counted(texts: Iterable[str], counter: dict) -> Iterable[str]:
    for text in texts:
        if not isinstance(text, str):
            raise TokenizerError(f"training texts must be str, got {type(text).__name__}")
        counter["bytes"] += len(text.encode("utf-8"))
        counter["docs"] += 1
        yield text


def train_hf(texts: Iterable[str], vocab_size: int, *, progress: bool = False):
    """Train HF `tokenizers` byte-level BPE with `PATTERN`; returns the HF `Tokenizer`.

    `vocab_size` counts the special tokens, which HF does not see (they are added later).
    """
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers, trainers

    n_ranks = _check_vocab_size(vocab_size) - len(SPECIAL_TOKENS)
    hf = Tokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PATTERN), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    trainer = trainers.BpeTrainer(
        vocab_size=n_ranks, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=progress, special_tokens=[])
    counter = {"bytes": 0, "docs": 0}
    hf.train_from_iterator(_counted(texts, counter), trainer)
    if counter["bytes"] == 0:
        raise TokenizerError(f"empty corpus: {counter['docs']} document(s), 0 bytes of text "
                             "to train a tokenizer on")
    got = hf.get_vocab_size()
    if got < n_ranks:
        raise TokenizerError(
            f"the corpus ({counter['bytes']:,} bytes) only supports {got - 256} merges, so a "
            f"vocab of at most {got + len(SPECIAL_TOKENS)}; asked for {vocab_size}. Use a "
            "smaller --vocab-size or more text")
    return hf


def ranks_from_hf(hf) -> dict[bytes, int]:
    """tiktoken ranks from a trained HF byte-level BPE: the 256 bytes, then merges in order."""
    decode = {c: b for b, c in byte_to_unicode().items()}
    to_bytes = lambda s: bytes(decode[c] for c in s)  # noqa: E731
    ranks = {bytes([b]): b for b in range(256)}
    for merge in json.loads(hf.to_str())["model"]["merges"]:
        left, right = merge.split(" ") if isinstance(merge, str) else merge
        token = to_bytes(left) + to_bytes(right)
        if token in ranks:  # cannot happen for a trainer's output; guards a damaged model
            raise TokenizerError(f"merge {merge!r} repeats token {token!r}")
        ranks[token] = len(ranks)
    return ranks


def train_tokenizer(texts: Iterable[str], vocab_size: int, *, progress: bool = False
                    ) -> tuple[dict[bytes, int], str]:
    """Train byte-level BPE on `texts`; returns (mergeable ranks, split pattern).

    `vocab_size` is the final vocabulary including the special tokens.
    """
    return ranks_from_hf(train_hf(texts, vocab_size, progress=progress)), PATTERN
