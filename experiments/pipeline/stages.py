"""The pipeline's stages: each makes one run directory (or file) under OUT through the project's
own drivers, and returns at once when it is already there (the drivers resume or skip)."""

from __future__ import annotations

import json
from pathlib import Path

from experiments.pipeline.settings import Settings


def finished(run: Path) -> bool:
    """A stage whose driver wrote its summary is done: it is not handed to the driver again,
    so a config field added to the code since (with its default) does not refuse the run."""
    return (run / "summary.json").is_file()


def _config(name: str, overrides: list[str]):
    from train import config as train_config

    return train_config.apply_overrides(train_config.load(name), overrides)


def task_options(s: Settings) -> dict:
    return {"digits": list(s.digits), "ops": s.ops}


def task(s: Settings):
    from evals import tasks

    return tasks.get("arithmetic", digits=s.digits, ops=s.ops)


def scored_problems(s: Settings) -> frozenset:
    """Every problem a stage is scored on: the card's held-out set (seed 0, which best-of-n
    and RL's evaluation share) and the held-out pairs' problems (seed 2)."""
    from evals.tasks import arithmetic

    return frozenset(
        arithmetic.problems(s.held_out, seed=0, digits=s.digits, ops=s.ops, stream="held_out")
        + arithmetic.problems(s.val_pair_problems, seed=2, digits=s.digits, ops=s.ops,
                              stream="held_out"))


def base_corpus(s: Settings, out: Path) -> Path:
    """OUT/corpus/mixed.jsonl: the demo plays and s.base_arith_lines lines of arithmetic prose
    (experiments.tool_use.corpus), none of them a scored problem."""
    from evals import harness
    from experiments.tool_use.corpus import write_mixed_corpus

    corpus = out / "corpus"
    if not (corpus / "mixed.json").exists():
        counts = write_mixed_corpus(corpus / "mixed.jsonl", s.base_arith_lines,
                                    held_out=scored_problems(s))
        harness.write_json(counts, corpus / "mixed.json")  # last: the corpus is complete
    return corpus / "mixed.jsonl"


def pretrain(s: Settings, out: Path, progress: bool) -> str:
    """The demo config with more layers, trained on the demo plays mixed with arithmetic prose
    (on the plays alone the ten digits' embeddings collapse into one direction, and SFT then
    cannot tell "4" from "7": experiments/tool_use/results/README.md)."""
    if finished(out / "base"):
        return str(out / "base")
    from train import data_source, prepare
    from train import pretrain as driver

    demo_dir, _ = data_source.resolve(_config("demo", []))  # the demo's 2048-token tokenizer
    tokenizer = Path(demo_dir) / data_source.tokenizer_file_name(demo_dir)
    tokens = out / "corpus" / "tokens"
    prepare.prepare(str(base_corpus(s, out)), tokenizer, tokens, progress=progress)
    cfg = _config("demo", [f"data.source={tokens.resolve()}",
                           f"model.n_layers={s.base_layers}", f"steps={s.base_steps}",
                           f"optim.lr={s.base_lr}", "eval_every=0",
                           f"checkpoint_every={max(1, s.base_steps // 2)}"])
    driver.run(cfg, out / "base", progress=progress)
    return str(out / "base")


def sft_data(s: Settings, out: Path) -> tuple[Path, Path]:
    """2-digit additions answered in the head; the validation split is the held-out set every
    stage is scored on (the task's seed-0 stream), the training split excludes it."""
    from train.datasets import arithmetic, conversations

    train_path, val_path = out / "data" / "sft.jsonl", out / "data" / "sft_val.jsonl"
    if not val_path.exists():
        train_path.parent.mkdir(parents=True, exist_ok=True)
        train, held_out = arithmetic.split(s.sft_problems, s.held_out, seed=0,
                                           digits=s.digits, ops=s.ops)
        conversations.write(train_path, [arithmetic.conversation(p, tool=False) for p in train],
                            force=True)
        # Written last: its presence says the stage is done.
        conversations.write(val_path, [arithmetic.conversation(p, tool=False)
                                       for p in held_out], force=True)
    return train_path, val_path


def sft(s: Settings, base: str, out: Path, progress: bool) -> str:
    if finished(out / "sft"):
        return str(out / "sft")
    from train import sft as driver

    train_path, val_path = sft_data(s, out)
    cfg = _config("sft", [f"sft.base={base}", f"sft.data={train_path}", f"sft.val={val_path}",
                          f"sft.epochs={s.sft_epochs}", f"optim.lr={s.sft_lr}",
                          "eval_every=0", "checkpoint_every=0"])
    driver.run(cfg, out / "sft", progress=progress)
    return str(out / "sft")


def pairs(s: Settings, sft_dir: str, out: Path, progress: bool) -> tuple[Path, Path]:
    """On-policy pairs of the SFT model: training ones from seed 1, held-out ones from seed 2,
    neither holding a problem of the evaluation set nor the other's."""
    import infer
    from evals import cli_pairs, harness

    train_path, val_path = out / "data" / "pairs.jsonl", out / "data" / "pairs_val.jsonl"
    if val_path.exists():
        return train_path, val_path
    train_path.parent.mkdir(parents=True, exist_ok=True)
    t = task(s)
    model = infer.load(sft_dir)
    val_items, _ = cli_pairs.without_held_out(t, t.items(s.val_pair_problems, seed=2),
                                              s.held_out)
    seen = {json.dumps(it.prompt, sort_keys=True) for it in val_items}
    items, _ = cli_pairs.without_held_out(t, t.items(s.pair_problems, seed=1), s.held_out)
    items = [it for it in items if json.dumps(it.prompt, sort_keys=True) not in seen]
    counts = {}
    for name, its, seed, path in (("train", items, 1, train_path),
                                  ("val", val_items, 2, val_path)):
        made, counts[name] = cli_pairs.sample_pairs(
            model, t, its, samples=s.pair_samples, temperature=s.pair_temperature, seed=seed,
            progress=progress, reference_chosen=s.pair_reference_chosen)
        cli_pairs.write_jsonl(made, path.with_suffix(".tmp.jsonl"))
    harness.write_json(counts, out / "data" / "pairs_counts.json")
    # Renamed last, val last of all: a killed stage leaves no half-made pair set behind.
    train_path.with_suffix(".tmp.jsonl").replace(train_path)
    val_path.with_suffix(".tmp.jsonl").replace(val_path)
    return train_path, val_path


def dpo(s: Settings, sft_dir: str, pair_files, out: Path, progress: bool) -> str:
    if finished(out / "dpo"):
        return str(out / "dpo")
    from train import dpo as driver

    train_path, val_path = pair_files
    cfg = _config("dpo", [f"dpo.base={sft_dir}", f"dpo.pairs={train_path}",
                          f"dpo.val={val_path}", f"dpo.beta={s.dpo_beta}",
                          f"dpo.rpo_alpha={s.dpo_rpo_alpha}",
                          f"dpo.epochs={s.dpo_epochs}", f"optim.lr={s.dpo_lr}",
                          "eval_every=25", "checkpoint_every=0", "log_every=5"])
    driver.run(cfg, out / "dpo", progress=progress)
    return str(out / "dpo")


def rm(s: Settings, sft_dir: str, pair_files, out: Path, progress: bool) -> str:
    if finished(out / "rm"):
        return str(out / "rm")
    from train import rm as driver

    train_path, val_path = pair_files
    cfg = _config("rm", [f"rm.base={sft_dir}", f"rm.pairs={train_path}", f"rm.val={val_path}",
                         f"rm.epochs={s.rm_epochs}", f"optim.lr={s.rm_lr}",
                         f"rm.head_init_std={s.rm_head_init_std}",
                         "eval_every=25", "checkpoint_every=0", "log_every=5"])
    driver.run(cfg, out / "rm", progress=progress)
    return str(out / "rm")


def rl(s: Settings, sft_dir: str, out: Path, progress: bool) -> str:
    if finished(out / "rl"):
        return str(out / "rl")
    from train import rl as driver

    cfg = _config("rl", [f"rl.base={sft_dir}", "rl.task=arithmetic",
                         f"rl.task_options={json.dumps(task_options(s))}",
                         f"rl.eval_problems={s.held_out}", f"rl.problems={s.rl_problems}",
                         f"rl.scale_by_std={str(s.rl_scale_by_std).lower()}",
                         f"rl.temperature={s.rl_temperature}",
                         f"rl.group_size={s.rl_group}", f"rl.prompts_per_step={s.rl_prompts}",
                         "rl.max_new_tokens=24", f"rl.beta_kl={s.rl_beta_kl}",
                         f"optim.lr={s.rl_lr}", f"steps={s.rl_steps}",
                         f"eval_every={max(1, s.rl_steps // 6)}",
                         f"checkpoint_every={max(1, s.rl_steps // 6)}"])
    driver.run(cfg, out / "rl", progress=progress)
    return str(out / "rl")
