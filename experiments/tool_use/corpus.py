"""The base's pretraining text: the demo plays mixed with arithmetic written out in prose.

    write_mixed_corpus("runs/tool_use/corpus/mixed.jsonl", n_lines=40_000)

Why not the plays alone (measured, results/README.md): Shakespeare has almost no digits, and
with tied embeddings every step pushes the logits of tokens that never occur down along the
same direction, so the ten digit embeddings end up nearly one vector (mean pairwise cosine 0.99,
norms 4x a word's). A model that cannot tell "4" from "7" at its input cannot copy them into a
call, and fine-tuning did not pull them apart (loss stuck at ln 10 on every digit). Lines like

    What is 4817 * 293? Let me see. 4817 * 293 = 1411381.

teach the digits and, because the operands come back after a filler of varying length, a copy
that finds them by content rather than at a fixed distance (the call in the chat format is ~45
tokens after the question). Problems are drawn from their own stream, with 1- to 4-digit
operands and all of + - *, and never include a held-out problem of the arithmetic task.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

from evals.tasks import arithmetic
from train.corpus import demo_corpus

FILLERS = ("", "Let me see.", "We multiply and add.", "Working it out step by step,",
           "The numbers are given above.", "A calculator would say so too.",
           "Careful with the carries here.", "Check it twice.")
LINES_PER_DOC = 40


def arithmetic_lines(n_lines: int, *, seed: int = 0, held_out: frozenset = frozenset()
                     ) -> list[str]:
    """Up to `n_lines` worked problems in prose, an equal share for each operand size (1..4 by
    1..3 digits); a size with fewer distinct problems than its share gives half of those it has
    (1 by 1 digits: 121), so asking 40,000 gives 32,451."""
    rng = random.Random(f"tool-use-corpus-{seed}")
    combos = [(a, b) for a in range(1, 5) for b in range(1, 4) if a >= b]
    per = -(-n_lines // len(combos))
    problems = []
    for digits in combos:
        space = 9 * 10 ** (digits[0] - 1) * 9 * 10 ** (digits[1] - 1) * 3
        problems += arithmetic.problems(min(per, space // 2), seed=seed, digits=digits,
                                        ops="+-*", exclude=held_out, stream="pretrain")
    rng.shuffle(problems)
    lines = []
    for p in problems[:n_lines]:
        filler = " ".join(rng.sample(FILLERS, rng.randrange(0, 3))).strip()
        lines.append(f"{p.prompt} {filler + ' ' if filler else ''}{arithmetic.final_answer(p)}")
    return lines


def write_mixed_corpus(path: str | Path, n_lines: int, *, seed: int = 0,
                       held_out: frozenset = frozenset()) -> dict:
    """The plays and `n_lines` arithmetic lines (documents of LINES_PER_DOC lines), as JSONL
    {"text": ...} (train.corpus reads it); returns counts."""
    path = Path(path)
    plays = list(demo_corpus().documents())
    lines = arithmetic_lines(n_lines, seed=seed, held_out=held_out)
    docs = plays + ["\n".join(lines[i:i + LINES_PER_DOC])
                    for i in range(0, len(lines), LINES_PER_DOC)]
    random.Random(seed).shuffle(docs)  # so the validation split holds both kinds
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for d in docs:
            f.write(json.dumps({"text": d}) + "\n")
    os.replace(tmp, path)
    return {"plays": len(plays), "arithmetic_lines": len(lines), "documents": len(docs),
            "play_bytes": sum(len(p.encode()) for p in plays),
            "arithmetic_bytes": sum(len(line.encode()) + 1 for line in lines)}
