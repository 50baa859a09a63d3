"""The report card: one markdown row per stage of a model's life, read from its run directories.

    rows = [report.stage_row(d, evals=report.load_eval(e)) for d, e in ...]
    print(report.markdown(rows))

A run directory is what `train` writes: config.json (the resolved config, whose filled-in
section names the stage), summary.json (the driver's final numbers) and metrics.jsonl (every
logged step and evaluation). The row reads, for every stage alike: parameters (from the model
config, exact), tokens processed (the loop's count: rows x row length x steps, padding
included), wall time, and the held-out numbers the driver measured: validation loss in the
stage's own objective (next token for pretraining, assistant tokens for SFT, the DPO or
Bradley-Terry loss for preference stages), its preference or pair accuracy, the RL pass@1, and
the mean per-token KL to the reference (k3 estimate, on RL's last logged rollouts).

Task accuracy comes from an `evals run` report of the stage's model (`load_eval`), shown with
its Wilson 95% interval; and, for a stage whose base is another row scored on the same problems,
the paired bootstrap interval of the gain over it (`evals.stats.paired_bootstrap`).
"""

from __future__ import annotations

import json
from pathlib import Path

from evals import stats

# config.json section -> stage, checked in this order (a run has one of them filled in)
STAGES = (("rl", "rl"), ("dpo", "dpo"), ("rm", "rm"), ("sft", "sft"))


class ReportError(ValueError):
    """A folder that is not a finished run, or an evaluation that does not fit it."""


def _read_json(path: Path, what: str):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ReportError(f"{path.parent}: no {path.name}; {what}") from None
    except json.JSONDecodeError as e:
        raise ReportError(f"{path}: not JSON ({e})") from None


def read_metrics(run: Path) -> list[dict]:
    path = run / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip()]


def stage_of(config: dict) -> str:
    """pretrain, sft, dpo, rm or rl: the stage section whose base is set."""
    for section, name in STAGES:
        if (config.get(section) or {}).get("base"):
            return name
    return "pretrain"


def param_count(config: dict) -> int:
    """Exact parameters of the run's model (a reward model adds its head of d_model)."""
    import model

    cfg = model.ModelConfig.from_dict(config["model"])
    extra = cfg.d_model if stage_of(config) == "rm" else 0
    return model.count_params(cfg)["params"] + extra


def last_value(metrics: list[dict], key: str):
    for record in reversed(metrics):
        if key in record:
            return record[key]
    return None


def run_numbers(run_dir) -> dict:
    """What a finished run directory says about itself (no model is loaded)."""
    run = Path(run_dir)
    if not run.is_dir():
        raise ReportError(f"{run}: no such run directory")
    config = _read_json(run / "config.json", "is it a twofiles run directory?")
    summary = _read_json(run / "summary.json",
                         "the run has not finished (rerun its command to finish it)")
    metrics = read_metrics(run)
    stage = stage_of(config)
    base = (config.get(stage) or {}).get("base") if stage != "pretrain" else None
    out = {"run": str(run), "name": run.name, "stage": stage, "base": base,
           "params": param_count(config),
           "tokens": summary.get("tokens", last_value(metrics, "tokens")),
           "steps": summary.get("step"), "wall_s": summary.get("wall_s"),
           "val_loss": summary.get("val_loss"), "base_val_loss": summary.get("base_val_loss")}
    if stage in ("dpo", "rm"):
        out["pair_accuracy"] = summary.get("val_accuracy")
        out["base_pair_accuracy"] = summary.get("base_val_accuracy")
        out["margin"] = summary.get("val_margin")
    if stage == "rl":
        out["pass1"] = summary.get("pass1")
        out["base_pass1"] = summary.get("base_pass1")
        out["kl"] = last_value(metrics, "kl")
        out["reward"] = last_value(metrics, "reward")
    return out


def load_eval(path) -> dict:
    """An `evals run --json` report, reduced to what the card needs: the task, the problems'
    prompts and scores (for pairing), accuracy and interval."""
    report = _read_json(Path(path), "write it with python -m evals run --json")
    if "items" not in report or "accuracy" not in report:
        raise ReportError(f"{path}: not an evals run report (no accuracy and items)")
    scores = [sum(it["scores"]) / len(it["scores"]) for it in report["items"]]
    return {"task": report["task"], "n": report["n"], "accuracy": report["accuracy"],
            "ci95": report["ci95"], "scores": scores,
            "prompts": [json.dumps(it["prompt"], sort_keys=True) for it in report["items"]]}


def _same_run(a, b) -> bool:
    return a is not None and b is not None and Path(a).resolve() == Path(b).resolve()


def with_gains(rows: list[dict], *, seed: int = 0) -> list[dict]:
    """Adds to each row whose base is another row scored on the same problems the paired
    bootstrap gain over that base (`gain`: diff, ci, ... and `gain_over`: the base's name).
    DPO and RL both start from SFT: each is compared with SFT, not with the row above."""
    out = []
    for row in rows:
        row = dict(row)
        base = next((r for r in rows if _same_run(r["run"], row.get("base"))), None)
        a, b = (base or {}).get("eval"), row.get("eval")
        if a and b and a["prompts"] == b["prompts"]:
            row["gain"] = stats.paired_bootstrap(a["scores"], b["scores"], seed=seed)
            row["gain_over"] = base["name"]
        out.append(row)
    return out


def _num(x, fmt: str) -> str:
    return "" if x is None else format(x, fmt)


def _count(x) -> str:
    if x is None:
        return ""
    for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if x >= size:
            return f"{x / size:.2f}{unit}"
    return str(x)


def _wall(seconds) -> str:
    if seconds is None:
        return ""
    m, s = divmod(round(seconds), 60)
    return f"{m} min {s:02d} s" if m else f"{s} s"


def _held_out(row: dict) -> str:
    """The stage's own held-out number, before -> after."""
    if row["stage"] in ("dpo", "rm"):
        name = "preference acc" if row["stage"] == "dpo" else "pair acc"
        if row.get("pair_accuracy") is None:
            return ""
        before = row.get("base_pair_accuracy")
        return f"{name} {_num(before, '.2f') + ' → ' if before is not None else ''}" \
               f"{row['pair_accuracy']:.2f}"
    if row["stage"] == "rl" and row.get("pass1") is not None:
        return f"greedy pass@1 {_num(row.get('base_pass1'), '.2f')} → {row['pass1']:.2f}"
    return ""


def _accuracy(row: dict) -> str:
    e = row.get("eval")
    if not e:
        return ""
    lo, hi = e["ci95"]
    return f"{e['accuracy']:.3f} [{lo:.3f}, {hi:.3f}]"


def _gain(row: dict) -> str:
    g = row.get("gain")
    if not g:
        return ""
    lo, hi = g["ci"]
    return f"{g['diff']:+.3f} [{lo:+.3f}, {hi:+.3f}] vs {row['gain_over']}"


COLUMNS = ("stage", "run", "parameters", "tokens", "wall time", "val loss", "held-out",
           "task accuracy [95% Wilson]", "gain over its base [95% paired bootstrap]",
           "KL to reference")


def markdown(rows: list[dict], *, title: str | None = None) -> str:
    """The card as a markdown table (a caption names the task the accuracy column scores)."""
    tasks = sorted({r["eval"]["task"] + f" (n={r['eval']['n']})" for r in rows if r.get("eval")})
    lines = [f"## {title}", ""] if title else []
    lines += ["| " + " | ".join(COLUMNS) + " |",
              "|" + "|".join(["---"] * 2 + ["---:"] * (len(COLUMNS) - 2)) + "|"]
    for r in rows:
        cells = [r["stage"], r["name"], _count(r["params"]), _count(r["tokens"]),
                 _wall(r["wall_s"]), _num(r.get("val_loss"), ".3f"), _held_out(r),
                 _accuracy(r), _gain(r), _num(r.get("kl"), ".4f")]
        lines.append("| " + " | ".join(cells) + " |")
    total = sum(r["wall_s"] or 0 for r in rows)
    lines += ["", f"Wall time of the stages together: {_wall(total)}."]
    if tasks:
        lines.append(f"Task accuracy: {', '.join(tasks)}, greedy, held-out problems.")
    lines.append("Validation loss is each stage's own objective on its held-out data; tokens "
                 "count every row position the loop processed, padding included.")
    return "\n".join(lines) + "\n"
