"""Retrieval over a user's own files: `--docs DIR` for `infer generate`, `chat` and `serve`.

    retriever = Retriever.from_dir("notes/")            # .txt, .md, .jsonl under notes/
    hits = retriever.search("when is the review?", k=5)  # [Hit(path, line, text, score)]
    content = prompt.user_text("when is the review?", hits)

`chunks` splits files into passages that remember their file and first line; `index` ranks
them with BM25 (the bm25s library) and, with `dense=True`, also by cosine similarity of the
64-dimensional static embeddings that the tokenlearn-static-model package ships, fused by
reciprocal rank; `prompt` puts the passages into a user message as a marked documents block,
data rather than instructions, and asks the answer to cite `[file:line]`. The block is message
content, so the renderer encodes it as text: a document can never become a control token.
"""

from infer.retrieval.chunks import Chunk, RetrievalError, read_dir
from infer.retrieval.index import Hit, Retriever

__all__ = ["Chunk", "Hit", "RetrievalError", "Retriever", "read_dir"]
