"""A task's accuracy with the live parameters: RL's rollouts and every stage's eval hook.

    task = task_eval.load_task("arithmetic", '{"digits": [2, 2]}', "sft.eval_task")
    sampler = task_eval.Sampler(base, run_cfg.model, task, task_eval.task_tools(task), 64)
    task_eval.greedy_accuracy(sampler, params, task.items(64, seed=0))
    # {"accuracy": 0.42, "lo": 0.30, "hi": 0.55, "n": 64}

The sampler runs infer's engine on the parameters being trained (not a file), with the tools
the task's answers call, and grades with the task's one grader (evals.tasks). The held-out
problems are the task's seed 0, what `python -m evals run` scores, so an accuracy logged during
training and the harness's number after it measure the same problems.
"""

from __future__ import annotations

import dataclasses
import json

import jax
import numpy as np

from infer.chat import render as chat_render
from infer.runtime import engine
from model.config import ConfigError


def load_task(name: str, options_json: str, where: str):
    """The evals task called `name` with `options_json` (a JSON object of its options); errors
    name the config fields (`where`.task and `where`_options)."""
    from evals import tasks

    try:
        options = json.loads(options_json) if options_json else {}
    except json.JSONDecodeError as e:
        raise ConfigError(f"{where}_options must be a JSON object, e.g. "
                          f"'{{\"digits\": [2, 2]}}': {e}") from None
    if not isinstance(options, dict):
        raise ConfigError(f"{where}_options must be a JSON object, got {options_json!r}")
    try:
        task = tasks.get(name, **options)
    except (tasks.TaskError, TypeError) as e:
        raise ConfigError(f"{where} {name}: {e}") from None
    if task.kind != "generate":
        raise ConfigError(f"{where} {name} is scored by log-likelihood of options; a task "
                          "whose answers are generated and graded is needed here")
    return task


def task_tools(task) -> list[str]:
    """The tools a task's answers call (arithmetic with tool=True calls the calculator)."""
    return ["calculator"] if getattr(task, "tool", False) else []


def cut_at_stop(token_ids, sampled, stop_ids) -> tuple[list[int], list[bool], bool]:
    """(ids, sampled flags, stopped): the completion up to and including its first sampled stop
    token (a forced one, e.g. ending a tool message, does not end the turn)."""
    for j, (t, s) in enumerate(zip(token_ids, sampled)):
        if s and t in stop_ids:
            return list(token_ids[:j + 1]), list(sampled[:j + 1]), True
    return list(token_ids), list(sampled), False


@dataclasses.dataclass
class Sampler:
    """Samples and grades completions of a task's problems with given parameters."""

    base: object  # the infer Model: tokenizer, chat template, conventions
    mcfg: object  # the run's model config (compute dtype)
    task: object
    tools: list[str]
    max_new_tokens: int

    def __post_init__(self):
        self.stop_ids = set(engine.stop_ids_for(self.base, chat=True))

    def prompt(self, item) -> list[int]:
        return chat_render.prompt_ids(self.base, item.prompt)

    def sample(self, params, items, *, temperature: float, seed: int):
        """(prompt ids, [(ids, sampled)], rewards, texts) for one completion per item."""
        prompts = [self.prompt(item) for item in items]
        # One device holds the sampler's copy: the engine caches executables by shape alone,
        # so parameters laid out over the training mesh must not meet one compiled for others.
        params = jax.device_put(params, jax.sharding.SingleDeviceSharding(jax.devices()[0]))
        runner = None
        if self.tools:
            from infer.tools.session import ToolRunner
            runner = ToolRunner(self.base, [item.prompt for item in items], self.tools)
        gen = engine.generate(params, self.mcfg, prompts, max_new_tokens=self.max_new_tokens,
                              temperature=temperature, seed=seed, tools=runner)
        completions, rewards, texts = [], [], []
        for item, c in zip(items, gen):
            ids, sampled, stopped = cut_at_stop(c.token_ids, c.sampled, self.stop_ids)
            text = self.base.tokenizer.decode(ids[:-1] if stopped else ids)
            completions.append((ids, sampled))
            rewards.append(float(self.task.grade(item, text)))
            texts.append(text)
        return prompts, completions, np.asarray(rewards, np.float32), texts


def greedy_accuracy(sampler: Sampler, params, items) -> dict:
    """Greedy accuracy on `items` with its Wilson 95% interval: accuracy, lo, hi, n."""
    from evals import stats

    _, _, rewards, _ = sampler.sample(params, items, temperature=0.0, seed=0)
    solved = float(rewards.sum())
    lo, hi = stats.wilson(solved, len(items))
    return {"accuracy": solved / len(items), "lo": lo, "hi": hi, "n": len(items)}


def check_fits(base, items, max_new_tokens: int, where: str) -> int:
    """The longest prompt + max_new_tokens, refused when it exceeds the model's context."""
    longest = max(len(chat_render.prompt_ids(base, item.prompt)) for item in items)
    if longest + max_new_tokens > base.config.max_seq_len:
        raise ConfigError(f"a prompt of {longest} tokens + {where}={max_new_tokens} new tokens "
                          f"exceeds the model's context of {base.config.max_seq_len} tokens; "
                          f"lower {where}")
    return longest + max_new_tokens
