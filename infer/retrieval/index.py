"""Ranking passages for a question: BM25 (bm25s), optionally fused with static embeddings.

BM25 scores words the question shares with a passage, weighted by rarity; the optional dense
score is the cosine similarity of mean static embeddings (tokenlearn-static-model: a 64-wide
int8 table, no network, no GPU), which also matches passages that use other words. The two
rankings are combined by reciprocal rank fusion (Cormack et al. 2009: score = sum of
1 / (60 + rank)), which needs no calibration between BM25's and cosine's scales.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Sequence

import numpy as np

from infer.retrieval.chunks import Chunk, RetrievalError, read_dir

RRF_K = 60  # the fusion constant of Cormack et al.


@dataclasses.dataclass(frozen=True)
class Hit:
    chunk: Chunk
    score: float  # BM25, or the fused reciprocal-rank score with dense

    def source(self) -> dict:
        """What `--json` lists for it: path, line and score."""
        return {"path": self.chunk.path, "line": self.chunk.line, "score": round(self.score, 4)}


class Retriever:
    """A BM25 index (and optional static embeddings) over passages; `search` is top-k."""

    def __init__(self, chunks: Sequence[Chunk], *, dense: bool = False):
        import bm25s

        if not chunks:
            raise RetrievalError("no passages to index (the files are empty)")
        self.chunks = list(chunks)
        self.dense = dense
        self._bm25 = bm25s.BM25()
        self._bm25.index(_tokens([c.text for c in self.chunks]), show_progress=False)
        self._vectors_ND = _embed([c.text for c in self.chunks]) if dense else None

    @classmethod
    def from_dir(cls, root: str | Path, *, dense: bool = False) -> Retriever:
        return cls(read_dir(root), dense=dense)

    def search(self, query: str, k: int = 5) -> list[Hit]:
        """The k best passages for `query`, best first (fewer when fewer share a word with it
        and dense scoring is off)."""
        if k < 1:
            raise RetrievalError(f"k must be at least 1, got {k}")
        bm25_N = self._bm25_scores(query)
        if self._vectors_ND is None:
            order = [i for i in np.argsort(-bm25_N, kind="stable")[:k] if bm25_N[i] > 0]
            return [Hit(self.chunks[i], float(bm25_N[i])) for i in order]
        cosine_N = self._vectors_ND @ _embed([query])[0]
        fused_N = _rrf(bm25_N) + _rrf(cosine_N)
        order = np.argsort(-fused_N, kind="stable")[:k]
        return [Hit(self.chunks[i], float(fused_N[i])) for i in order]

    def _bm25_scores(self, query: str) -> np.ndarray:
        tokens = _tokens([query])
        words = [w for w in tokens.vocab if w != ""]
        if not words:  # only stopwords or punctuation: nothing to match
            return np.zeros(len(self.chunks), np.float32)
        return np.asarray(self._bm25.get_scores(words), np.float32)


def _tokens(texts: list[str]):
    import bm25s

    return bm25s.tokenize(texts, stopwords="en", show_progress=False)


def _rrf(scores_N: np.ndarray) -> np.ndarray:
    ranks_N = np.empty(len(scores_N), np.float64)
    ranks_N[np.argsort(-scores_N, kind="stable")] = np.arange(1, len(scores_N) + 1)
    return 1.0 / (RRF_K + ranks_N)


def _embed(texts: list[str]) -> np.ndarray:
    """Unit-length static embeddings [N, 64] of `texts`."""
    try:
        import static_model
    except ImportError:
        raise RetrievalError("dense retrieval needs the tokenlearn-static-model package "
                             "(pip install tokenlearn-static-model)") from None
    return np.asarray(static_model.get_embeddings(list(texts)), np.float32).reshape(len(texts), -1)
