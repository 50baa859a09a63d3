"""RL on a task's grader (train.rl): the sampler's log-probabilities are the trainer's, forced
tool tokens are never learnt, rollouts follow from (seed, batch), and a SIGKILLed run resumes
bit for bit."""

import json
import sys

import jax
import numpy as np
import pytest

import infer
import model
from infer.formats import run_checkpoint
from infer.runtime import engine
from tests.train_helpers import kill_after_checkpoint_then_rerun
from train import config as train_config
from train import policy_loss, rl

# A tiny random model on one-digit sums: fast to sample, and graded like the real task.
TASK_OPTIONS = {"digits": [1, 1], "ops": "+"}
SETTINGS = {"rl": {"task": "arithmetic", "task_options": json.dumps(TASK_OPTIONS),
                   "problems": 30, "eval_problems": 4, "group_size": 4, "prompts_per_step": 2,
                   "max_new_tokens": 6, "updates_per_batch": 3, "beta_kl": 0.05},
            "optim": {"lr": 1e-3, "schedule": "constant", "warmup_steps": 0},
            "steps": 8, "eval_every": 4, "checkpoint_every": 2, "log_every": 1, "seed": 0}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A tiny twofiles base with a tokenizer that knows the arithmetic prompts."""
    from tests.test_export_common import CORPUS
    from tests.train_helpers import export_tiny_base

    root = tmp_path_factory.mktemp("rl")
    sums = [f"What is {a} + {b}? {a} + {b} = {a + b}." for a in range(10) for b in range(10)]
    export_tiny_base(root, CORPUS * 2 + sums)
    return root


def rl_config(files, **sets):
    d = json.loads(json.dumps(SETTINGS))
    d["rl"]["base"] = str(files / "base")
    return train_config.apply_overrides(train_config.from_dict(d),
                                        [f"{k}={v}" for k, v in sets.items()])


@pytest.fixture(scope="module")
def sampler(files):
    cfg = rl_config(files)
    task = rl.load_task(cfg.rl)
    base = infer.load(cfg.rl.base)
    return rl.Sampler(base, base.config, task, rl.task_tools(task), cfg.rl.max_new_tokens), task


def test_sampler_log_probs_equal_the_trainers(sampler):
    """The engine's distribution over each sampled token is the one the loss differentiates."""
    s, task = sampler
    base = s.base
    items = task.items(4, seed=3)
    prompts = [s.prompt(item) for item in items]
    temperature = 0.7
    gen = engine.generate(base.params, base.config, prompts, max_new_tokens=8,
                          temperature=temperature, seed=5, output_logits=True)
    completions = [(c.token_ids, c.sampled) for c in gen]
    row_len = max(len(p) for p in prompts) + 8
    batch = rl.rollout_rows(prompts, completions, row_len)
    logp_BT, _ = policy_loss.policy_log_probs(base.params, batch, base.config, temperature)
    logp_BT = np.asarray(logp_BT)
    for b, c in enumerate(gen):
        scaled = c.logits / temperature
        sampler_logp = (scaled - np.log(np.exp(scaled - scaled.max(-1, keepdims=True)).sum(-1,
                        keepdims=True)) - scaled.max(-1, keepdims=True))
        want = sampler_logp[np.arange(len(c.token_ids)), c.token_ids]
        start = len(prompts[b]) - 1
        got = logp_BT[b, start:start + len(c.token_ids)]
        assert batch["loss_mask"][b, start:start + len(c.token_ids)].all()
        np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)


def test_forced_tool_tokens_and_padding_are_not_learnt():
    prompt = [5, 6, 7]
    ids, sampled = [10, 11, 12, 13, 14], [True, False, False, True, True]
    batch = rl.rollout_rows([prompt], [(ids, sampled)], row_len=10)
    # Targets 2..6 are the completion's tokens (target j predicts token j + 1).
    np.testing.assert_array_equal(batch["targets"][0, 2:7], ids)
    np.testing.assert_array_equal(batch["loss_mask"][0],
                                  [0, 0, 1, 0, 0, 1, 1, 0, 0])


def test_only_a_sampled_stop_token_ends_the_completion():
    stop = {99}
    ids, sampled, stopped = rl.cut_at_stop([1, 99, 2, 99, 3], [True, False, True, True, True],
                                           stop)
    assert (ids, sampled, stopped) == ([1, 99, 2, 99], [True, False, True, True], True)
    assert rl.cut_at_stop([1, 2], [True, True], stop) == ([1, 2], [True, True], False)


def test_rollouts_follow_from_seed_and_batch_index(files, sampler):
    s, task = sampler
    cfg = rl_config(files)
    items, _ = rl.problems(task, cfg.rl)
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]).reshape(1, 1, 1),
                             ("data", "fsdp", "tensor"))
    log_probs = jax.jit(lambda p, i, t: policy_loss.policy_log_probs(
        p, {"inputs": i, "targets": t}, s.base.config, cfg.rl.temperature)[0])
    roll = rl.Rollouts(s, items, cfg.rl, cfg.seed, 40, mesh, log_probs)
    a, b, other = (roll.collect(s.base.params, i) for i in (3, 3, 4))
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert not np.array_equal(a["inputs"], other["inputs"])
    assert a["inputs"].shape == (8, 39) and set(np.unique(a["reward"])) <= {0.0, 1.0}
    # Groups share their prompt, so the zero-advantage rows come in whole groups.
    z = a["zero_advantage"].reshape(2, 4)
    assert (z == z[:, :1]).all()


def test_bad_settings_are_refused_before_anything_is_written(files, tmp_path):
    from model.config import ConfigError

    for sets, words in [({"rl.group_size": 1}, "group_size"),
                        ({"rl.temperature": 0.0}, "temperature"),
                        ({"rl.task": "nope"}, "unknown task"),
                        ({"rl.task_options": "[1]"}, "JSON object"),
                        ({"rl.max_new_tokens": 60}, "context")]:
        with pytest.raises(ConfigError, match=words):
            rl.run(rl_config(files, **sets), tmp_path / "out", progress=False)
        assert not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def full_run(files):
    out = files / "full"
    return out, rl.run(rl_config(files), out, progress=False)


def test_a_run_trains_logs_and_loads_as_a_model(full_run):
    from train import metrics

    out, summary = full_run
    assert summary["step"] == 8 and 0.0 <= summary["pass1"] <= 1.0
    assert summary["base_pass1"] is not None
    rows = [r for r in metrics.read(out) if "loss" in r]
    assert [r["step"] for r in rows] == list(range(1, 9))
    for key in ("reward", "zero_adv_groups", "kl", "response_length", "entropy"):
        assert all(np.isfinite(r[key]) for r in rows), key
    assert rows[0]["kl"] == pytest.approx(0.0, abs=1e-6)  # the policy starts as the reference
    assert rows[-1]["kl"] > 0.0
    assert 1.0 <= rows[0]["response_length"] <= 6.0
    loaded = infer.load(out)
    base = infer.load(summary["out_dir"].replace("full", "base"))
    moved = [not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(loaded.params),
                                                      jax.tree.leaves(base.params))]
    assert any(moved)


def _rl_cmd(files, config, out):
    return [sys.executable, "-m", "train", "rl", "--base", str(files / "base"), "--task",
            "arithmetic", "--config", str(config), "--out", str(out), "--no-progress"]


def test_sigkill_resume_is_bitwise_identical(files, full_run):
    """Killed after a checkpoint between two updates of one rollout batch (step 4 of batches of
    3 updates) and rerun, the run ends with the uninterrupted run's parameters."""
    config = files / "rl.json"
    d = json.loads(json.dumps(SETTINGS))
    del d["rl"]["task"]
    config.write_text(json.dumps(d))
    out = files / "killed"
    kill_after_checkpoint_then_rerun(_rl_cmd(files, config, out), out, 4)
    _, ref, _, _ = run_checkpoint.load_params(full_run[0])
    _, res, _, _ = run_checkpoint.load_params(out)
    for a, b in zip(jax.tree.leaves(ref), jax.tree.leaves(res)):
        assert np.array_equal(np.asarray(a), np.asarray(b))



class ParityReward:
    """The task's problems with a reward a random model earns half the time (the length of
    its answer is odd), so groups have advantages to learn from."""

    def __init__(self, task):
        self.task, self.kind = task, task.kind

    def items(self, n, seed=0):
        return self.task.items(n, seed)

    def grade(self, item, completion):
        return float(len(completion) % 2)


def test_a_run_stopped_between_updates_of_a_batch_continues_exactly(files, monkeypatch):
    """Step 4 falls between the updates of rollout batch 1 (steps 4-6): the batch itself is in
    the checkpoint, since the parameters that sampled it are gone."""
    from train import metrics

    load_task = rl.load_task
    monkeypatch.setattr(rl, "load_task", lambda cfg: ParityReward(load_task(cfg)))
    whole, parts = files / "parity_whole", files / "parity_parts"
    rl.run(rl_config(files), whole, progress=False)
    rl.run(rl_config(files, steps=4), parts, progress=False)
    rl.run(rl_config(files), parts, progress=False)
    rows = [r for r in metrics.read(whole) if "loss" in r]
    assert min(r["zero_adv_groups"] for r in rows) < 1.0  # there was a gradient to follow
    _, ref, _, _ = run_checkpoint.load_params(whole)
    _, res, _, _ = run_checkpoint.load_params(parts)
    for a, b in zip(jax.tree.leaves(ref), jax.tree.leaves(res)):
        assert np.array_equal(np.asarray(a), np.asarray(b))


class ForcingTool:
    """A stand-in tool runner: after each row's first token it forces two fixed ids."""

    FORCED = [3, 4]

    def __init__(self, model, conversations, names):
        self.pause_ids = list(range(model.config.vocab_size))  # look at every row at once
        self.done = set()

    def after(self, row, token_ids):
        if row in self.done:
            return []
        self.done.add(row)
        return self.FORCED


def test_rollouts_never_learn_what_a_tool_forced(files, sampler, monkeypatch):
    from infer.tools import session

    s, task = sampler
    monkeypatch.setattr(session, "ToolRunner", ForcingTool)
    tool_sampler = rl.Sampler(s.base, s.base.config, task, ["calculator"], 6)
    items = task.items(2, seed=1)
    prompts, completions, _, _ = tool_sampler.sample(s.base.params, items, temperature=1.0,
                                                     seed=0)
    batch = rl.rollout_rows(prompts, completions, max(len(p) for p in prompts) + 6)
    for b, (ids, sampled) in enumerate(completions):
        assert ids[1:3] == ForcingTool.FORCED and sampled[:3] == [True, False, False]
        start = len(prompts[b]) - 1
        np.testing.assert_array_equal(batch["loss_mask"][b, start:start + 3], [1, 0, 0])
