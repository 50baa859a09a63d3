"""Retrieval over files a model never saw: recall@5 of infer.retrieval and SmolLM2's answers.

    python -m experiments.retrieval --out runs/retrieval              # recall only (no model)
    python -m experiments.retrieval --out runs/retrieval --answers 50 # and SmolLM2's accuracy

The corpus: the module docstrings of this Python's standard library (read with `ast`, nothing
imported), one markdown file per module, written to OUT/docs. The questions: a seeded half of the
files is held out; from each held-out file up to 3 sentences of 8-40 words are drawn and their longest
word blanked ("Fill in the blank: ..."), a question whose answer is in exactly one known
passage. Nothing was tuned on them: chunk size, k and the fusion constant were fixed before
the first run. Recall@5: the passage holding the sentence is among the 5 retrieved (BM25, and
BM25 fused with static embeddings). Answer accuracy: SmolLM2-135M-Instruct, greedy, with the
5 passages in its prompt (and closed-book, without them), correct when the blanked word is in
the answer; Wilson 95% intervals. Results: experiments/retrieval/results.json.
"""

from __future__ import annotations

import argparse
import ast
import json
import random
import re
import sysconfig
from pathlib import Path

from tqdm import tqdm

STOP = set("about above after again against because before being below between both could "
           "during each further having other should their there these those through under "
           "until where which while would""".split())


def write_corpus(out: Path) -> list[Path]:
    """One markdown file per standard-library module with a docstring of 300+ characters."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for path in sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py")):
        try:
            doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        if doc and len(doc) >= 300:
            target = out / f"{path.stem}.md"
            target.write_text(f"# {path.stem}\n\n{doc}\n", encoding="utf-8")
            written.append(target)
    return written


def questions(retriever, files: list[Path], root: Path, n: int, seed: int) -> list[dict]:
    """Cloze questions from the held-out half of the files (up to 3 per file, seeded)."""
    rng = random.Random(seed)
    names = sorted(p.relative_to(root).as_posix() for p in files)
    held_out = set(rng.sample(names, len(names) // 2))
    by_file: dict[str, list] = {}
    for c in retriever.chunks:
        if c.path in held_out:
            by_file.setdefault(c.path, []).append(c)
    out = []
    for path in sorted(by_file):
        candidates = []
        for c in by_file[path]:
            for sentence in re.split(r"(?<=[.!?])\s+", c.text.replace("\n", " ")):
                words = re.findall(r"[A-Za-z]{6,}", sentence)
                words = [w for w in words if w.lower() not in STOP]
                if 8 <= len(sentence.split()) <= 40 and words:
                    candidates.append((c, sentence, max(words, key=len)))
        for c, sentence, word in rng.sample(candidates, min(3, len(candidates))):
            blanked = re.sub(rf"\b{word}\b", "____", sentence, count=1)
            out.append({"path": c.path, "line": c.line, "answer": word,
                        "question": f'Fill in the blank with one word: "{blanked}"'})
    rng.shuffle(out)
    return out[:n]


def recall_at(retriever, qs: list[dict], k: int = 5) -> dict:
    from evals.stats import wilson

    found = sum(any(h.chunk.path == q["path"] and h.chunk.line == q["line"]
                    for h in retriever.search(q["question"], k)) for q in qs)
    return {"k": k, "n": len(qs), "hits": found, "recall": found / len(qs),
            "ci95": list(wilson(found, len(qs)))}


def accuracy(model, retriever, qs: list[dict], *, with_docs: bool, max_new_tokens: int) -> dict:
    from evals.stats import wilson
    from infer.retrieval import prompt as docs_prompt
    from infer.runtime import engine

    records, batch = [], 8
    for start in tqdm(range(0, len(qs), batch), desc="answers" + (" (docs)" if with_docs else ""),
                      unit="batch"):
        chunk = qs[start:start + batch]
        hits = [retriever.search(q["question"], 5) if with_docs else [] for q in chunk]
        conversations = [[{"role": "user", "content": docs_prompt.user_text(q["question"], h)}]
                         for q, h in zip(chunk, hits)]
        gen = engine.generate_text(model, conversations, chat=True, temperature=0.0,
                                   max_new_tokens=max_new_tokens)
        for q, h, g in zip(chunk, hits, gen):
            correct = q["answer"].lower() in g.text.lower()
            records.append({**q, "reply": g.text, "correct": correct,
                            "cited": docs_prompt.cited(g.text),
                            "sources": [x.source() for x in h]})
    right = sum(r["correct"] for r in records)
    cites = sum(bool(r["cited"]) for r in records)
    return {"n": len(records), "correct": right, "accuracy": right / len(records),
            "ci95": list(wilson(right, len(records))), "answers_citing": cites,
            "records": records}


def main(argv=None) -> int:
    from infer.retrieval import Retriever

    p = argparse.ArgumentParser(prog="python -m experiments.retrieval")
    p.add_argument("--out", required=True, help="folder for the corpus (OUT/docs)")
    p.add_argument("--n", type=int, default=100, help="questions for recall")
    p.add_argument("--answers", type=int, default=0, help="questions SmolLM2 answers (0: none)")
    p.add_argument("--max-new-tokens", type=int, default=24)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--results", default=str(Path(__file__).parent / "results.json"))
    args = p.parse_args(argv)
    root = Path(args.out) / "docs"
    files = write_corpus(root)
    bm25 = Retriever.from_dir(root)
    dense = Retriever(bm25.chunks, dense=True)
    qs = questions(bm25, files, root, args.n, args.seed)
    report = {"corpus": {"files": len(files), "passages": len(bm25.chunks),
                         "source": "module docstrings of the Python standard library "
                                   f"({sysconfig.get_paths()['stdlib']})"},
              "recall_at_5": {"bm25": recall_at(bm25, qs), "bm25+dense": recall_at(dense, qs)}}
    print(json.dumps(report, indent=1))
    if args.answers:
        import infer

        model = infer.load("smollm2")
        few = qs[:args.answers]
        report["answers"] = {
            "model": "smollm2 (SmolLM2-135M-Instruct, float32, greedy)",
            "with_docs": accuracy(model, bm25, few, with_docs=True,
                                  max_new_tokens=args.max_new_tokens),
            "closed_book": accuracy(model, bm25, few, with_docs=False,
                                    max_new_tokens=args.max_new_tokens)}
        for name in ("with_docs", "closed_book"):
            a = report["answers"][name]
            print(f"{name}: {a['correct']}/{a['n']} = {a['accuracy']:.3f} "
                  f"(95% CI {a['ci95'][0]:.3f}-{a['ci95'][1]:.3f}), citing {a['answers_citing']}")
    Path(args.results).write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n")
    (Path(args.results).parent / "questions.jsonl").write_text(
        "".join(json.dumps(q, ensure_ascii=False) + "\n" for q in qs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
