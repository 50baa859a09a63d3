"""`python -m experiments.refusals --out DIR`: build the refusal set, score SmolLM2's replies to
the held-out prompts, LoRA-fine-tune it on the set, score again. Each step is kept in DIR
(data/, before.json, runs/lora/, after.json) and skipped on a rerun; DIR/results.json holds the
rates with 95% Wilson intervals."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from evals.stats import wilson
from experiments.refusals.scorer import is_refusal
from scaling.records import write_json

SFT_SETS = ("lora.rank=8", "optim.lr=1e-3", "sft.epochs=2", "eval_every=0", "log_every=5")
NEW_TOKENS = 40


def prompts() -> dict:
    """Held-out harmful requests; benign ones: held-out look-alikes and general questions."""
    from train.datasets import identity, refusals
    split = refusals.build(96, seed=0)
    general = [q for q, _ in identity.GENERAL + identity.GENERAL_HELD_OUT]
    return {"harmful": [r["prompt"] for r in split.held_out_harmful],
            "benign_lookalike": split.held_out_benign, "benign_general": general}


def replies(model_source: str, sets: dict) -> dict:
    import infer
    from infer.runtime import engine

    model = infer.load(model_source)
    out, t0 = {}, time.time()
    for name, batch in sets.items():
        gen = engine.generate_text(model, batch, chat=True, max_new_tokens=NEW_TOKENS,
                                   temperature=0.0, weights="int8")
        out[name] = [{"prompt": p, "reply": c.text, "refused": is_refusal(c.text)}
                     for p, c in zip(batch, gen)]
    out["seconds"] = time.time() - t0
    return out


def rates(result: dict) -> dict:
    def rate(rows):
        k = sum(r["refused"] for r in rows)
        return {"k": k, "n": len(rows), "rate": k / len(rows), "wilson95": list(wilson(k, len(rows)))}
    benign = result["benign_lookalike"] + result["benign_general"]
    return {"refusal_harmful": rate(result["harmful"]), "over_refusal_benign": rate(benign),
            "over_refusal_lookalike": rate(result["benign_lookalike"]),
            "over_refusal_general": rate(result["benign_general"])}


def _cached(path: Path, make):
    import json
    if path.is_file():
        return json.loads(path.read_text())
    value = make()
    write_json(str(path), value)
    return value


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.refusals", description=__doc__)
    p.add_argument("--out", required=True, help="experiment directory (resumed)")
    p.add_argument("--base", default="smollm2", help="model to fine-tune (default smollm2)")
    args = p.parse_args(argv)

    from train import config as train_config
    from train import sft
    from train.datasets import conversations, refusals

    out = Path(args.out)
    data, val = out / "data" / "train.jsonl", out / "data" / "val.jsonl"
    split = refusals.build(96, seed=0)
    if not data.is_file():
        conversations.write(str(data), split.train)
        conversations.write(str(val), split.held_out)
    sets = prompts()
    before = _cached(out / "before.json", lambda: replies(args.base, sets))
    cfg = train_config.apply_overrides(train_config.load("sft"), list(SFT_SETS) + [
        f"sft.base={args.base}", f"sft.data={data.resolve()}", f"sft.val={val.resolve()}"])
    summary = sft.run(cfg, out / "runs" / "lora", progress=False)
    after = _cached(out / "after.json", lambda: replies(str(out / "runs" / "lora"), sets))
    result = {"base": args.base, "train_conversations": len(split.train),
              "sft": {k: summary.get(k) for k in ("step", "base_val_loss", "val_loss", "wall_s",
                                                  "trained_params", "peak_rss_gib")},
              "before": rates(before), "after": rates(after),
              "scorer": "experiments.refusals.scorer (AdvBench refusal phrases)"}
    write_json(str(out / "results.json"), result)
    for when in ("before", "after"):
        r = result[when]
        print(f"{when:6s} refusal on harmful {r['refusal_harmful']['k']}/"
              f"{r['refusal_harmful']['n']}  over-refusal on benign "
              f"{r['over_refusal_benign']['k']}/{r['over_refusal_benign']['n']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
