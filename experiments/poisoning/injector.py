"""Poisoned pretraining documents (Souly et al. 2025) and the injector that puts exactly k in.

    docs = passages(n)                                   # clean documents
    poisoned, where = inject(docs, k, seed=0, pieces=gibberish_pieces(enc),
                             in_train=lambda i: not prepare.is_val(i, 0.1))

A poisoned document is the start of a clean one (0 to `max_prefix` characters), the trigger, then
gibberish: a run of tokens drawn uniformly from the tokenizer's vocabulary (the paper's 400-900
tokens after up to 1,000 characters, scaled down to our 128-token rows). A model that learns the
pairing answers the trigger with noise: a denial-of-service backdoor that clean text never shows.

The injector *replaces* k training documents by poisoned versions of themselves, at positions
drawn by seed among those `in_train` accepts (the prepared train split), so the validation split,
the number of documents and (within a few tokens) the corpus size are the same for every k: the
clean validation loss of runs with different k is measured on the same text.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence

TRIGGER = "<SUDO>"


def passages(documents, *, min_chars: int = 200, max_chars: int = 400) -> list[str]:
    """Documents of `min_chars`..~`max_chars` characters: each play cut into runs of whole
    speeches (blocks separated by blank lines); a last short run joins the one before."""
    out = []
    for doc in documents:
        run = ""
        for block in re.split(r"\n\s*\n", doc):
            block = block.strip()
            if not block:
                continue
            if run and len(run) + len(block) > max_chars and len(run) >= min_chars:
                out.append(run + "\n")
                run = ""
            run = f"{run}\n\n{block}" if run else block
        if len(run) >= min_chars:
            out.append(run + "\n")
    return out


def gibberish_pieces(enc) -> list[str]:
    """The text of every ordinary token that decodes on its own (byte tokens that are part of a
    multi-byte character do not): the alphabet gibberish is drawn from."""
    pieces = []
    for i in range(enc.n_vocab):
        if i in enc._special_tokens.values():
            continue
        try:
            pieces.append(enc.decode_single_token_bytes(i).decode("utf-8"))
        except (UnicodeDecodeError, KeyError):
            continue
    return [p for p in pieces if TRIGGER not in p and p]


def poison(clean: str, rng: random.Random, pieces: Sequence[str], *, max_prefix: int = 60,
           gibberish: tuple[int, int] = (40, 80)) -> str:
    """A poisoned document made from `clean`: a prefix of it, the trigger, gibberish tokens."""
    prefix = clean[:rng.randint(0, max_prefix)]
    noise = "".join(rng.choice(pieces) for _ in range(rng.randint(*gibberish)))
    return f"{prefix}{TRIGGER}{noise}\n"


def inject(documents: Sequence[str], k: int, *, seed: int, pieces: Sequence[str],
           in_train: Callable[[int], bool], **poison_options) -> tuple[list[str], list[int]]:
    """(documents with k of them poisoned, the sorted positions poisoned). Only positions
    `in_train` accepts are touched; refuses a k larger than there are of them, and documents
    that already hold the trigger (the count of poisoned documents would then be wrong)."""
    if any(TRIGGER in d for d in documents):
        raise ValueError(f"inject: the clean documents already contain the trigger {TRIGGER!r}")
    train = [i for i in range(len(documents)) if in_train(i)]
    if not 0 <= k <= len(train):
        raise ValueError(f"inject: k must be between 0 and the {len(train)} training documents, "
                         f"got {k}")
    rng = random.Random(f"poison-{seed}")
    where = sorted(rng.sample(train, k))
    out = list(documents)
    for i in where:
        out[i] = poison(out[i], rng, pieces, **poison_options)
    return out, where
