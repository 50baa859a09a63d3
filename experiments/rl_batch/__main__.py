"""`python -m experiments.rl_batch --base SFT --out DIR NAME OVERRIDES [NAME OVERRIDES ...]`."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

# The pipeline's RL stage as session 6 ran it (experiments/pipeline/stages.py and settings.py),
# evaluated only at the end, before an arm's overrides.
PIPELINE_RL = ["rl.task=arithmetic", 'rl.task_options={"digits": [2, 2], "ops": "+"}',
               "rl.eval_problems=500", "rl.problems=3000", "rl.group_size=8",
               "rl.prompts_per_step=8", "rl.max_new_tokens=24", "rl.beta_kl=0.05",
               "optim.lr=3e-5", "steps=240", "eval_every=0", "checkpoint_every=0"]


def greedy_rewards(base, params, task, items, max_new_tokens: int) -> np.ndarray:
    """Per-problem greedy reward (0 or 1) of `params` on `items`."""
    from train import rl

    sampler = rl.Sampler(base, base.config, task, rl.task_tools(task), max_new_tokens)
    _, _, rewards, _ = sampler.sample(params, items, temperature=0.0, seed=0)
    return rewards


def reward_fifths(run_dir: Path) -> list[float]:
    """The training reward averaged over each fifth of the run: flat or rising."""
    from train.metrics import read

    rewards = [r["reward"] for r in read(run_dir) if "reward" in r]
    k = max(1, len(rewards) // 5)
    return [round(float(np.mean(rewards[i:i + k])), 3) for i in range(0, len(rewards), k)]


def arm(base, base_dir: str, out: Path, name: str, overrides: str) -> dict:
    """Trains one arm and measures its greedy held-out gain over the base."""
    import infer
    from evals import stats
    from train import config as train_config
    from train import rl
    from train.metrics import read

    started = time.time()
    cfg = train_config.apply_overrides(train_config.load("rl"),
                                       [f"rl.base={base_dir}", *PIPELINE_RL, *overrides.split()])
    rl.run(cfg, out / name, force=True, progress=True)
    task = rl.load_task(cfg.rl)
    items = task.items(cfg.rl.eval_problems, seed=0)  # the held-out problems rl.run scores
    before = greedy_rewards(base, base.params, task, items, cfg.rl.max_new_tokens)
    after = greedy_rewards(base, infer.load(str(out / name)).params, task, items,
                           cfg.rl.max_new_tokens)
    gain = stats.paired_bootstrap(before, after)
    kl = [r["kl"] for r in read(out / name) if "kl" in r]
    return {"name": name, "overrides": overrides, "base_pass1": float(before.mean()),
            "pass1": float(after.mean()), "gain": gain["diff"], "ci": gain["ci"],
            "p_le_0": gain["p_le_0"], "train_reward_fifths": reward_fifths(out / name),
            "kl_last": kl[-1], "kl_max": max(kl), "wall_s": round(time.time() - started, 1)}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m experiments.rl_batch", description=__doc__)
    p.add_argument("--base", required=True, help="the SFT run RL starts from")
    p.add_argument("--out", required=True, help="folder for the arms' runs and results.jsonl")
    p.add_argument("arms", nargs="+", help="NAME 'a.b=v c=w' pairs: an arm and its overrides")
    args = p.parse_args(argv)
    if len(args.arms) % 2:
        p.error("arms come in pairs: NAME 'OVERRIDES' (quote the overrides, '' for none)")
    import infer

    base_dir = str(Path(args.base).resolve())
    base = infer.load(base_dir)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, overrides in zip(args.arms[::2], args.arms[1::2]):
        result = arm(base, base_dir, out, name, overrides)
        print(json.dumps(result), flush=True)
        with open(out / "results.jsonl", "a") as f:  # one line per arm, appended as it ends
            f.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
