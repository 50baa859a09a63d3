"""The laptop pipeline's own part: its base learns arithmetic from prose that never states a
problem any stage is scored on (the stages' training itself is train's, tested elsewhere; the
whole pipeline runs live, tiny, in tests/test_preferences_notebook.py)."""

from __future__ import annotations

import dataclasses
import json
import re

from experiments.pipeline import stages
from experiments.pipeline.settings import FAST


def test_base_corpus_holds_no_scored_problem_but_holds_the_task(tmp_path):
    s = dataclasses.replace(FAST, base_arith_lines=4000)
    path = stages.base_corpus(s, tmp_path)
    text = "\n".join(json.loads(line)["text"] for line in path.read_text().splitlines())
    questions = set(re.findall(r"What is \d+ [-+*] \d+\?", text))
    # What the card, best-of-n and RL score (seed 0) and the held-out pairs (seed 2), drawn
    # here through the task as those stages draw them.
    task = stages.task(s)
    scored = {it.prompt[0]["content"] for it in task.items(s.held_out, seed=0)
              + task.items(s.val_pair_problems, seed=2)}
    assert len(scored) > s.held_out
    assert not questions & scored
    # The exclusion is not vacuous: the prose does teach 2-digit additions, and the plays are in.
    assert len({q for q in questions if re.fullmatch(r"What is \d\d \+ \d\d\?", q)}) > 100
    assert "ROMEO" in text
