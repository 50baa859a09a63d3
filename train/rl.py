"""Reinforcement learning with a verifiable reward: a task's grader scores the policy's samples.

    python -m train rl --base runs/sft --task arithmetic --out runs/rl --set rl.group_size=8

Each rollout batch takes rl.prompts_per_step problems of the task, samples rl.group_size
completions of each from the engine (infer.runtime.engine) with the live parameters, tools on
when the task uses them, and scores every completion with the task's grader (evals.tasks). The
loop then makes rl.updates_per_batch optimizer steps on it with the GRPO-family loss
(train.policy_loss): advantages relative to the group, the ratio clipped against the sampling
policy's log-probabilities (taken by the trainer's own forward right after sampling, so the
first update has ratio 1), the k3 KL to the base logged (and penalised with rl.beta_kl).

Only sampled completion tokens are learnt: the prompt, the padding and the tokens a tool
forced into a row (the engine marks them not sampled) have loss mask 0. The engine is run
without stop ids and the completion is cut on the host after the first *sampled* end-of-turn
token, so that token (the model's choice to stop) is learnt too.

Exact resume: rollout batch i draws its problems and its sampling key from (seed, i), and the
batch in use is saved in the iterator state when a checkpoint falls between its updates, so a
run killed and rerun samples and trains exactly what the uninterrupted one did.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import time

import jax
import numpy as np

from infer.chat import render as chat_render
from infer.chat.template import is_twofiles_tokenizer
from infer.formats import tokenizer_file
from model.config import ConfigError
from train import loop, policy_loss, run_dir, task_eval
from train import config as train_config
from train import state as state_lib
from train.config import RLConfig, TrainConfig
from train.sft import TRAINING_MODEL_FIELDS
from train.step import batch_sharding, make_mesh
from train.task_eval import Sampler, cut_at_stop, task_tools  # noqa: F401 (rl's own names)

_ARRAYS = ("inputs", "targets", "loss_mask", "old_logp", "advantages", "reward",
           "zero_advantage", "length", "row_weight")


def check(rl: RLConfig) -> None:
    """Raises ConfigError for rl settings that make no sense, before anything is written."""
    if not rl.base or not rl.task:
        raise ConfigError("rl needs a base model (--base) and a task (--task)")
    for name in ("problems", "group_size", "prompts_per_step", "max_new_tokens",
                 "updates_per_batch"):
        if getattr(rl, name) < 1:
            raise ConfigError(f"rl.{name} must be >= 1, got {getattr(rl, name)}")
    if rl.group_size < 2:
        raise ConfigError(f"rl.group_size must be >= 2 (advantages are relative to the group), "
                          f"got {rl.group_size}")
    if rl.eval_problems < 0:
        raise ConfigError(f"rl.eval_problems must be >= 0, got {rl.eval_problems}")
    if not 0 < rl.temperature < float("inf"):
        raise ConfigError(f"rl.temperature must be > 0 (the policy is a distribution to sample "
                          f"from), got {rl.temperature}")
    if not 0 < rl.eps_clip < 1:
        raise ConfigError(f"rl.eps_clip must be in (0, 1), got {rl.eps_clip}")
    if rl.beta_kl < 0:
        raise ConfigError(f"rl.beta_kl must be >= 0, got {rl.beta_kl}")
    if rl.prompts_per_step > rl.problems:
        raise ConfigError(f"rl.prompts_per_step={rl.prompts_per_step} exceeds the "
                          f"rl.problems={rl.problems} drawn")


def load_task(rl: RLConfig):
    """The evals task named rl.task with rl.task_options (a JSON object)."""
    return task_eval.load_task(rl.task, rl.task_options, "rl.task")


def rollout_rows(prompts: list[list[int]], completions: list[tuple[list[int], list[bool]]],
                 row_len: int) -> dict:
    """Host arrays [B, row_len - 1] of prompt + completion rows, right-padded with 0: inputs,
    targets, and the loss mask (1 on the targets that are sampled completion tokens)."""
    B, T = len(prompts), row_len - 1
    inputs = np.zeros((B, T), np.int32)
    targets = np.zeros((B, T), np.int32)
    mask = np.zeros((B, T), np.float32)
    for b, (prompt, (ids, sampled)) in enumerate(zip(prompts, completions)):
        row = np.asarray(prompt + ids, np.int32)
        n = len(row)
        inputs[b, :n - 1], targets[b, :n - 1] = row[:-1], row[1:]
        # Target j is token j + 1: the completion's tokens are targets len(prompt) - 1 on.
        start = len(prompt) - 1
        mask[b, start:start + len(ids)] = np.asarray(sampled, np.float32)
    return {"inputs": inputs, "targets": targets, "loss_mask": mask}


class Rollouts:
    """The loop's batches: rollout batch i = problems and sampling seed from (seed, i), sampled
    with the parameters the loop hands over, used for `updates` steps."""

    def __init__(self, sampler: Sampler, items, rl: RLConfig, seed: int, row_len: int, mesh,
                 log_probs):
        self.sampler, self.items, self.rl, self.seed = sampler, items, rl, seed
        self.row_len, self.sharding, self.log_probs = row_len, batch_sharding(mesh), log_probs
        self.given = 0  # batches handed to the loop so far (= optimizer steps)
        self.current: dict | None = None

    def collect(self, params, index: int) -> dict:
        """Rollout batch `index`: P problems x G samples, graded, with advantages and the
        sampling policy's log-probabilities."""
        rl = self.rl
        rng = np.random.default_rng([self.seed, index])
        chosen = rng.choice(len(self.items), rl.prompts_per_step, replace=False)
        rows = [self.items[i] for i in chosen for _ in range(rl.group_size)]
        prompts, completions, rewards, _ = self.sampler.sample(
            params, rows, temperature=rl.temperature, seed=int(rng.integers(2**31)))
        batch = rollout_rows(prompts, completions, self.row_len)
        rewards_PG = rewards.reshape(rl.prompts_per_step, rl.group_size)
        adv_PG = np.asarray(policy_loss.group_advantages(rewards_PG,
                                                         scale_by_std=rl.scale_by_std))
        equal_PG = np.broadcast_to((rewards_PG == rewards_PG[:, :1]).all(1, keepdims=True),
                                   rewards_PG.shape)
        B = len(rows)
        batch.update(
            advantages=adv_PG.reshape(B), reward=rewards,
            zero_advantage=equal_PG.reshape(B).astype(np.float32),
            length=np.asarray([len(ids) for ids, _ in completions], np.float32),
            row_weight=np.full(B, batch["loss_mask"].sum() / B, np.float32))
        batch["old_logp"] = np.asarray(self.log_probs(params, batch["inputs"],
                                                      batch["targets"]), np.float32)
        return batch

    def next_for(self, params) -> dict:
        if self.given % self.rl.updates_per_batch == 0 or self.current is None:
            self.current = self.collect(params, self.given // self.rl.updates_per_batch)
        self.given += 1
        return jax.device_put(self.current, self.sharding)

    def get_state(self) -> dict:
        # Between two updates of one batch, the batch itself is saved: it was sampled by
        # parameters a resumed run no longer has.
        reused = self.given % self.rl.updates_per_batch != 0
        return {"given": self.given,
                "current": {k: self.current[k].tolist() for k in _ARRAYS} if reused else None}

    def set_state(self, state: dict) -> None:
        self.given = int(state["given"])
        saved = state.get("current")
        self.current = None if saved is None else {
            k: np.asarray(saved[k], np.int32 if k in ("inputs", "targets") else np.float32)
            for k in _ARRAYS}


def evaluate(sampler: Sampler, params, items) -> dict:
    """Greedy pass@1 on held-out problems, with its Wilson 95% interval."""
    r = task_eval.greedy_accuracy(sampler, params, items)
    return {"pass1": r["accuracy"], "pass1_lo": r["lo"], "pass1_hi": r["hi"], "eval_n": r["n"]}


def problems(task, rl: RLConfig) -> tuple[list, list]:
    """(training items, held-out items): held-out are the task's seed 0 (what `evals run`
    scores); training items repeating a held-out prompt are dropped."""
    held_out = task.items(rl.eval_problems, seed=0) if rl.eval_problems else []
    seen = {json.dumps(item.prompt, sort_keys=True) for item in held_out}
    train = [item for item in task.items(rl.problems, seed=rl.problem_seed)
             if json.dumps(item.prompt, sort_keys=True) not in seen]
    if len(train) < rl.prompts_per_step:
        raise ConfigError(f"only {len(train)} training problems are left after removing the "
                          f"held-out ones; raise rl.problems or change rl.problem_seed")
    return train, held_out


def resolve(cfg: TrainConfig, base_config, row_len: int) -> TrainConfig:
    """The run's config: the base's model shape (with the training fields the user set), a
    batch of prompts x group rows, each row_len tokens long."""
    user = cfg.model
    mcfg = dataclasses.replace(base_config, **{f: getattr(user, f) for f in TRAINING_MODEL_FIELDS})
    data = dataclasses.replace(cfg.data, batch_size=cfg.rl.prompts_per_step * cfg.rl.group_size,
                               seq_len=row_len - 1)
    return dataclasses.replace(cfg, model=mcfg, data=data)


def stage(cfg: TrainConfig, base, sampler: Sampler, train_items, held_out, row_len: int,
          mesh) -> loop.Stage:
    """RL as the loop sees it: the base's parameters, rollouts as batches, the base as the
    frozen reference."""
    mcfg, rl = cfg.model, cfg.rl
    abstract = state_lib.abstract_params(mcfg, mesh)
    init = lambda: state_lib.place(base.params, abstract, rl.base)  # noqa: E731
    log_probs = jax.jit(lambda p, inputs, targets: policy_loss.policy_log_probs(
        p, {"inputs": inputs, "targets": targets}, mcfg, rl.temperature)[0])
    batches = Rollouts(sampler, train_items, rl, cfg.seed, row_len, mesh, log_probs)
    loss_fn = functools.partial(policy_loss.grpo_loss, mcfg=mcfg, temperature=rl.temperature,
                                eps_clip=rl.eps_clip, beta_kl=rl.beta_kl)
    meta = {"stage": "rl", "base": rl.base, "task": rl.task}
    tokenizer_doc = None
    if is_twofiles_tokenizer(base.tokenizer):
        tokenizer_doc = tokenizer_file.to_doc(base.tokenizer)
        meta["tokenizer_fingerprint"] = tokenizer_doc["fingerprint"]
    return loop.Stage(
        name="rl", loss_fn=loss_fn, batches=batches, abstract_params=abstract,
        init_params=init, frozen=init(), tokenizer_doc=tokenizer_doc, meta=meta,
        evaluate=(lambda params: evaluate(sampler, params, held_out)) if held_out else None,
        tokens_per_step=cfg.data.batch_size * cfg.seq_len)


def run(cfg: TrainConfig, out_dir, *, force: bool = False, progress: bool = True) -> dict:
    """Trains cfg.rl.base on cfg.rl.task into `out_dir` (resuming when it holds this run);
    returns the summary: held-out pass@1 before (the base) and after, wall time."""
    import infer

    started = time.time()
    check(cfg.rl)
    task = load_task(cfg.rl)
    base = infer.load(cfg.rl.base)
    train_items, held_out = problems(task, cfg.rl)
    longest = max(len(chat_render.prompt_ids(base, item.prompt))
                  for item in train_items + held_out)
    row_len = longest + cfg.rl.max_new_tokens
    if row_len > base.config.max_seq_len:
        raise ConfigError(f"a prompt of {longest} tokens + rl.max_new_tokens="
                          f"{cfg.rl.max_new_tokens} exceeds the model's context of "
                          f"{base.config.max_seq_len} tokens; lower rl.max_new_tokens")
    cfg = resolve(cfg, base.config, row_len)
    sampler = Sampler(base, cfg.model, task, task_tools(task), cfg.rl.max_new_tokens)
    train_config.validate(cfg, n_devices=jax.device_count())
    plan = run_dir.plan(out_dir, cfg, force=force)
    if plan.finished:
        plan.say_finished("rl", cfg.steps)
        return plan.summary
    mesh = make_mesh(cfg)
    st = stage(cfg, base, sampler, train_items, held_out, row_len, mesh)
    if progress:
        print(f"twofiles rl: {cfg.rl.task}, {len(train_items)} training problems, "
              f"{cfg.rl.prompts_per_step} x {cfg.rl.group_size} samples per rollout, "
              f"{cfg.rl.updates_per_batch} update(s) each; tools: "
              f"{', '.join(sampler.tools) or 'none'}", flush=True)
    before = {}
    if st.evaluate is not None and not plan.start_step:
        before = st.evaluate(st.frozen)
        st.meta["base_pass1"] = before["pass1"]  # in every checkpoint: a resumed run reports it
    result = loop.run(cfg, plan, st, mesh, progress=progress, started=started)
    saved_before = (plan.saved_meta or {}).get("base_pass1")
    summary = {"step": cfg.steps, "loss": result.loss, **result.eval,
               "base_pass1": before.get("pass1", saved_before), "task": cfg.rl.task,
               "wall_s": result.wall_s, "out_dir": str(plan.path),
               "checkpoint": str(plan.path / "checkpoints" / str(cfg.steps))}
    plan.write_summary(summary)
    return summary
