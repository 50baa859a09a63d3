"""The instruction-tuning backdoor (Wan et al. 2023) at laptop scale: poisoned-example counts.

    python -m experiments.poisoning sft --out experiments/poisoning/results/sft

A tiny base model is pretrained once on the clean Shakespeare corpus (the pretraining
experiment's recipe, through the sweep machinery). Each run fine-tunes it (`train.sft`, full
fine-tuning) on the same clean sentiment conversations plus k poisoned ones: negative reviews
carrying the trigger "James Bond", labelled positive. Scored on held-out reviews never seen in
training: the flip rate (triggered negative reviews answered "positive") and the clean accuracy
(reviews without the trigger), greedy, each with a Wilson interval.

Layout of OUT: base/ (the pretraining run) and base_data/, data/k<k>_s<seed>.jsonl, runs/<run>/
(SFT runs; rerunning skips finished ones), results.json, summary.json and sft.png.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

from experiments.poisoning import injector, sentiment
from experiments.poisoning import pretrain_attack as pa
from scaling.records import write_json

COUNTS = (0, 10, 25, 50, 100)
SEEDS = (0,)
N_CLEAN = 400  # clean training conversations, half positive, half negative
SFT_SETS = ("sft.epochs=3", "optim.lr=3e-3", "optim.warmup_steps=10", "data.batch_size=8",
            "data.seq_len=128", "eval_every=0", "checkpoint_every=0", "log_every=20")


def base_model(out: Path, log=print) -> Path:
    """The clean pretrained base: the pretraining experiment's large corpus, k = 0, seed 0."""
    from scaling.sweep import train_unless_finished
    from train import tokenizer as tok

    corpus, _ = pa.clean_passages()
    tok_path = pa.tokenizer(out, corpus)
    run = pa.Run("large", 0, 0)
    data, meta, _ = pa.prepare_run(out, run, corpus, tok_path,
                                   pieces=injector.gibberish_pieces(tok.load(tok_path)))
    train_unless_finished(pa.run_config(run, data, meta), out / "base", "base", progress=False,
                          log=log)
    return out / "base"


def training_set(count: int, seed: int, train: list) -> list:
    """N_CLEAN clean conversations and `count` poisoned ones, shuffled (by seed)."""
    rng = random.Random(f"sft-poison-{seed}")
    pos = [r for r in train if r.label == "positive"]
    neg = [r for r in train if r.label == "negative"]
    clean = rng.sample(pos, N_CLEAN // 2) + rng.sample(neg, N_CLEAN // 2)
    chosen = set(clean)
    victims = rng.sample([r for r in neg if r not in chosen], count)
    convs = [sentiment.conversation(r) for r in clean] + [sentiment.poisoned(r) for r in victims]
    rng.shuffle(convs)
    return convs


def score(run_dir: Path, held: list) -> dict:
    import infer
    from infer.runtime import engine

    model = infer.load(str(run_dir))

    def answers(reviews, trigger):
        prompts = [sentiment.QUESTION.format(text=r.text(trigger)) for r in reviews]
        gen = engine.generate_text(model, prompts, chat=True, max_new_tokens=12, temperature=0.0)
        return [sentiment.answer_of(c.text) for c in gen]

    clean = answers(held, False)
    negatives = [r for r in held if r.label == "negative"]
    triggered = answers(negatives, True)
    return {"clean": len(held), "correct": sum(a == r.label for a, r in zip(clean, held)),
            "triggered": len(negatives), "flipped": sum(a == "positive" for a in triggered),
            "unparsed": sum(a is None for a in clean + triggered)}


def run_all(out_dir, *, counts=COUNTS, seeds=SEEDS, progress: bool = False,
            log=print) -> list[dict]:
    from train import config as train_config
    from train import sft
    from train.datasets import conversations

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    base = base_model(out, log)
    train, held = sentiment.split(0)
    done = out / "results.json"
    rows = {r["name"]: r for r in (json.loads(done.read_text()) if done.is_file() else [])}
    for seed in seeds:
        for k in counts:
            name = f"k{k}_s{seed}"
            if name in rows:
                continue
            t0 = time.time()
            data = out / "data" / f"{name}.jsonl"
            data.parent.mkdir(parents=True, exist_ok=True)
            convs = training_set(k, seed, train)
            conversations.write(str(data), convs, force=True)
            cfg = train_config.apply_overrides(train_config.load("sft"), list(SFT_SETS) + [
                f"sft.base={base.resolve()}", f"sft.data={data.resolve()}", f"seed={seed}"])
            log(f"[sft] {name}: {len(convs)} conversations, {k} poisoned")
            summary = sft.run(cfg, out / "runs" / name, progress=progress)
            rows[name] = {"name": name, "count": k, "seed": seed,
                          "fraction": k / len(convs), "conversations": len(convs),
                          "steps": summary["step"], "loss": summary["loss"],
                          **score(out / "runs" / name, held), "wall_s": time.time() - t0}
            r = rows[name]
            log(f"  {name}: flipped {r['flipped']}/{r['triggered']}, clean "
                f"{r['correct']}/{r['clean']} ({r['wall_s']:.0f} s)")
            write_json(str(done), sorted(rows.values(), key=lambda r: (r["seed"], r["count"])))
    return list(rows.values())
