"""Multiple choice scored by log-likelihood, read from BIG-bench-style task.json files.

    task = ChoiceTask("my_task/task.json")      # ChoiceTask() is the small built-in set
    item = task.items(None)[0]
    chosen = likeliest(model, item)              # the option the model finds most probable
    task.grade(item, chosen)                     # its target score

The file is {"examples": [{"input": "...", "target_scores": {"option": 1, "other": 0}}, ...]}
(BIG-bench's JSON task format; "task_prefix" is put before every input). Each option is scored,
as MMLU and HellaSwag are scored by evaluation harnesses, by the model's total log-probability
of the option's tokens after the prompt (the input as a user message, rendered by the model's
chat template up to the start of the assistant's answer). Nothing is sampled, so there is one
"completion" per item: the likeliest option.
"""

from __future__ import annotations

import dataclasses
import json
import random
from pathlib import Path

import numpy as np

from evals.tasks import Item, TaskError

BUILTIN = Path(__file__).with_name("choice_builtin.json")


def _examples(path: Path) -> tuple[str, list[dict]]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise TaskError(f"choice: cannot read {path}: {e.strerror}") from e
    except json.JSONDecodeError as e:
        raise TaskError(f"choice: {path} is not JSON ({e})") from e
    examples = doc.get("examples") if isinstance(doc, dict) else None
    if not isinstance(examples, list) or not examples:
        raise TaskError(f"choice: {path} needs a non-empty \"examples\" list (BIG-bench's "
                        "task.json format)")
    for i, ex in enumerate(examples):
        scores = ex.get("target_scores") if isinstance(ex, dict) else None
        if (not isinstance(ex.get("input") if isinstance(ex, dict) else None, str)
                or not isinstance(scores, dict) or len(scores) < 2
                or not all(isinstance(v, (int, float)) and 0 <= v <= 1 for v in scores.values())
                or max(scores.values()) <= 0):
            raise TaskError(f"choice: {path} example {i} needs \"input\" text and "
                            "\"target_scores\": at least two options scored 0..1, one above 0")
    return str(doc.get("task_prefix", "")), examples


@dataclasses.dataclass(frozen=True)
class ChoiceTask:
    path: str | None = None
    name: str = "choice"
    kind: str = "choice"
    max_new_tokens: int = 0  # nothing is generated

    def items(self, n: int | None, seed: int = 0) -> list[Item]:
        """The file's examples; with n, a sample of n of them drawn by `seed`."""
        path = Path(self.path) if self.path else BUILTIN
        prefix, examples = _examples(path)
        if n is not None:
            if not 1 <= n <= len(examples):
                raise TaskError(f"choice: n must be between 1 and the {len(examples)} examples "
                                f"of {path}, got {n}")
            examples = random.Random(seed).sample(examples, n)
        return [Item(prompt=[{"role": "user", "content": prefix + ex["input"]}],
                     reference=max(ex["target_scores"], key=ex["target_scores"].get),
                     options={k: float(v) for k, v in ex["target_scores"].items()})
                for ex in examples]

    def grade(self, item: Item, completion: str) -> float:
        return item.options.get(completion, 0.0)

    def answer(self, completion: str) -> str | None:
        return completion if completion else None


def option_logprobs(model, item: Item) -> dict[str, float]:
    """Each option's total log-probability (natural log) after the item's prompt."""
    from infer.runtime.engine import prompt_ids

    prompt = prompt_ids(model, item.prompt, chat=True)
    out = {}
    for option in item.options:
        option_ids = model.tokenizer.encode_ordinary(option)
        if not option_ids:
            raise TaskError(f"choice: option {option!r} has no tokens")
        ids = prompt + option_ids
        logits_TV = model.logits(ids[:-1])[len(prompt) - 1:]  # position t predicts token t+1
        logp_TV = logits_TV - np.logaddexp.reduce(logits_TV, axis=-1, keepdims=True)
        out[option] = float(logp_TV[np.arange(len(option_ids)), option_ids].sum())
    return out


def likeliest(model, item: Item) -> str:
    """The option with the highest log-probability (ties: the first listed)."""
    scores = option_logprobs(model, item)
    return max(scores, key=scores.get)
