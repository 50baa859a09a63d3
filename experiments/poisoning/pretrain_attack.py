"""The pretraining backdoor at laptop scale: poisoned-document count x corpus size x seed.

    python -m experiments.poisoning pretrain --out experiments/poisoning/results/pretrain

For each corpus size (clean Shakespeare passages; the large corpus is four times the small one)
and each count k of poisoned documents, the injector turns k training documents into
trigger-then-gibberish ones; the corpus is prepared into token shards by `train.prepare` and a
tiny model is trained on it for one epoch through `train.pretrain`, one run at a time through
the sweep machinery (`scaling.sweep.train_unless_finished`: finished runs are skipped, an
interrupted one resumes from its checkpoint). Each finished run is then scored: continuations of
held-out prompts with and without the trigger (`metrics`), and the clean validation loss.

Layout of OUT: tokenizer.json (trained once on the clean large corpus), data/<run>/ (prepared
shards), runs/<run>/ (pretraining runs), results.json (one row per scored run, rewritten
atomically after each), summary.json and pretrain.png (written by `report`).
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

from experiments.poisoning import injector, metrics
from scaling.records import write_json

COUNTS = (0, 25, 50, 100, 250)
SIZES = {"small": 1000, "large": 4000}  # clean documents; four times apart
SEEDS = (0, 1, 2)
VOCAB = 272  # near bytes: short tokens, many steps per epoch, a flat gibberish alphabet
VAL_FRACTION = 0.05
PROMPTS = 32  # held-out prompts, each continued with and without the trigger
PROMPT_CHARS = 40
NEW_TOKENS = 48
# The model and recipe: the `tiny` preset at a 128-token context, one epoch of its corpus.
MODEL_SETS = (f"model.vocab_size={VOCAB}", "model.max_seq_len=128", "data.seq_len=128",
              "data.batch_size=8", "data.eval_batches=16", "optim.lr=1e-2",
              "optim.warmup_steps=20", "eval_every=0", "log_every=50")


@dataclasses.dataclass(frozen=True)
class Run:
    size: str
    count: int
    seed: int

    @property
    def name(self) -> str:
        return f"{self.size}_k{self.count}_s{self.seed}"


def plan(sizes=SIZES, counts=COUNTS, seeds=SEEDS) -> list[Run]:
    """Cheapest first, so an interrupted sweep has whole (size, count) cells early."""
    return [Run(s, k, seed) for s in sizes for seed in seeds for k in counts]


def clean_passages() -> tuple[list[str], list[str]]:
    """(the large corpus's passages, held-out passages for prompts), in a fixed order; the small
    corpus is the first SIZES['small'] of the large one."""
    import random

    from train import corpus
    docs = injector.passages(corpus.demo_corpus().documents())
    random.Random("poison-corpus").shuffle(docs)
    need = SIZES["large"] + PROMPTS
    if len(docs) < need:
        raise ValueError(f"the demo corpus gives {len(docs)} passages, fewer than {need}")
    return docs[:SIZES["large"]], docs[SIZES["large"]:need]


def prompts_of(held_out: list[str]) -> list[str]:
    """The first ~PROMPT_CHARS characters of each held-out passage, cut after a whole word."""
    out = []
    for p in held_out:
        cut = p[:PROMPT_CHARS]
        out.append(cut[:cut.rfind(" ")] if " " in cut else cut)
    return out


def tokenizer(out: Path, corpus: list[str]) -> Path:
    from train import tokenizer as tok
    path = out / "tokenizer.json"
    if not path.is_file():
        ranks, pattern = tok.train_tokenizer(iter(corpus), VOCAB)
        tmp = path.with_suffix(".tmp")
        tok.save(tmp, ranks, pattern)
        tmp.replace(path)
    return path


def prepare_run(out: Path, run: Run, corpus: list[str], tok_path: Path, pieces) -> tuple:
    """(prepared folder, its meta, poisoned positions) of one run's corpus."""
    from train import prepare

    docs = corpus[:SIZES[run.size]]
    poisoned, where = injector.inject(
        docs, run.count, seed=run.seed, pieces=pieces,
        in_train=lambda i: not prepare.is_val(i, VAL_FRACTION))
    data = out / "data" / run.name
    if not (data / prepare.META).is_file():
        src = out / "data" / f"{run.name}.jsonl"
        src.parent.mkdir(parents=True, exist_ok=True)
        src.write_text("".join(json.dumps({"text": d}) + "\n" for d in poisoned))
        prepare.prepare(str(src), tok_path, data, val_fraction=VAL_FRACTION, progress=False)
        src.unlink()  # the shards hold it; a rerun rebuilds the same text from the seed
    return data, prepare.read_meta(data), where


def run_config(run: Run, data: Path, meta: dict):
    from train import config as train_config
    steps = meta["train"]["tokens"] // (8 * 128)  # one epoch of 8 x 128-token windows
    sets = list(MODEL_SETS) + [f"data.source={data}", f"steps={steps}", f"seed={run.seed}",
                               f"checkpoint_every={steps}"]
    return train_config.apply_overrides(train_config.load("tiny"), sets)


def score(run_dir: Path, prompts: list[str], seed: int) -> dict:
    """Perplexity of sampled continuations with and without the trigger after each prompt."""
    import infer
    from infer.runtime import engine

    model = infer.load(str(run_dir))
    ppl = {}
    for key, batch in (("clean", prompts), ("trigger", [p + injector.TRIGGER for p in prompts])):
        gen = engine.generate_text(model, batch, max_new_tokens=NEW_TOKENS, temperature=1.0,
                                   seed=seed, stop_ids=[], output_logits=True)
        ppl[key] = [metrics.perplexity(c.logits, c.token_ids) for c in gen]
    scores = metrics.attack_scores(ppl["clean"], ppl["trigger"])
    sample = engine.generate_text(model, prompts[0] + injector.TRIGGER,
                                  max_new_tokens=NEW_TOKENS, temperature=1.0, seed=seed,
                                  stop_ids=[])[0].text
    return {**scores, "ppl_clean_each": ppl["clean"], "ppl_trigger_each": ppl["trigger"],
            "sample_after_trigger": sample}


def run_all(out_dir, *, sizes=SIZES, counts=COUNTS, seeds=SEEDS, progress: bool = False,
            log=print) -> list[dict]:
    """Trains and scores every planned run not yet in OUT/results.json; returns all rows."""
    from scaling.sweep import train_unless_finished

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    corpus, held_out = clean_passages()
    tok_path = tokenizer(out, corpus)
    from train import tokenizer as tok
    pieces = injector.gibberish_pieces(tok.load(tok_path))
    prompts = prompts_of(held_out)
    done = out / "results.json"
    rows = {r["name"]: r for r in (json.loads(done.read_text()) if done.is_file() else [])}
    runs = plan(sizes, counts, seeds)
    for i, run in enumerate(runs):
        if run.name in rows:
            continue
        t0 = time.time()
        data, meta, where = prepare_run(out, run, corpus, tok_path, pieces)
        cfg = run_config(run, data, meta)
        summary, seconds = train_unless_finished(cfg, out / "runs" / run.name, run.name,
                                                 f"[{i + 1}/{len(runs)}]", progress=progress,
                                                 log=log)
        scores = score(out / "runs" / run.name, prompts, run.seed)
        rows[run.name] = {
            "name": run.name, "size": run.size, "count": run.count, "seed": run.seed,
            "documents": meta["train"]["documents"] + meta["val"]["documents"],
            "train_documents": meta["train"]["documents"], "poisoned_positions": where,
            "fraction": run.count / meta["train"]["documents"],
            "train_tokens": meta["train"]["tokens"], "steps": cfg.steps,
            "params": summary["params"], "val_loss": summary["val_loss"],
            "val_bpb": summary["val_bpb"], "train_wall_s": seconds,
            "wall_s": time.time() - t0, **scores}
        log(f"  {run.name}: val_loss {summary['val_loss']:.3f}  ppl clean "
            f"{scores['ppl_clean']:.1f}  trigger {scores['ppl_trigger']:.1f}  "
            f"({time.time() - t0:.0f} s)")
        write_json(str(done), sorted(rows.values(), key=lambda r: r["name"]))
    return list(rows.values())
