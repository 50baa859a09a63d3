"""The experiment's stages: base, data, the two fine-tunings, the evaluation grid, the report.

Each stage writes into the work folder (`--out`, default runs/tool_use) and is skipped when its
output is there, so the stages can run one locked command at a time and a rerun resumes:

    corpus/        the plays mixed with arithmetic prose, tokenized (experiments.tool_use.corpus)
    base/          a 4-layer, width-128 model pretrained on it (train.pretrain)
    data/          tool.jsonl, head.jsonl (equal tokens), their held-out *_val.jsonl, data.json
    sft_tool/      the base fine-tuned on calculator calls (train.sft)
    sft_head/      the base fine-tuned on answers in the head, same steps, batch and rows
    eval/          one harness report per (arm, tool on/off) on the task's held-out problems
    diagnostic.json  does the tool model copy the operands? (swapped-prompt NLL of its call)

`report` gathers them into results.json and the plot (experiments/tool_use/results/).
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from pathlib import Path

ARMS = ("tool", "head")


@dataclasses.dataclass(frozen=True)
class Settings:
    out: Path = Path("runs/tool_use")
    digits: tuple[int, int] = (4, 3)
    ops: str = "*"
    seed: int = 0
    # The base: the demo model made deeper, since one layer never learnt to copy operands.
    base_layers: int = 4
    base_steps: int = 800
    base_arith_lines: int = 40_000  # asks 40,000 lines, gets 32,451: 1.8 MB beside 5.0 MB of plays
    base_lr: float = 3e-3
    # Fine-tuning, identical for both arms: same steps of the same rows = same tokens and time.
    n_tool: int = 12_000        # tool-arm conversations; the head arm matches their tokens
    n_val: int = 200            # held-out conversations for the validation loss
    # 3,000 steps on a 3,000-step cosine, raised to 5,000, then to 6,000 (the loop resumes
    # exactly and its schedule then spans the new length: the lr goes back up, to 8.2e-4 at
    # step 3,050 and 3.1e-4 at 5,050, and decays again). Why so long, measured
    # (results/README.md): the result's digits are learnt one at a time, each after a plateau
    # at ln 10 nats; the second digit of 7-digit results was at chance until step 4,000-5,000.
    sft_steps: int = 6000
    sft_raised_from: tuple[int, ...] = (3000, 5000)
    sft_lr: float = 2e-3
    batch_size: int = 8
    seq_len: int = 128          # a row holds one tool conversation (~101 tokens) or three head ones
    # Evaluation on the task's held-out problems (none of them trained on).
    n_eval: int = 500
    max_new_tokens: int = 96    # the call, the forced tool output and the final line: ~85

    def sft_overrides(self, steps: int) -> list[str]:
        """The same for both arms: that is the comparison."""
        return [f"steps={steps}", f"optim.lr={self.sft_lr}", "optim.warmup_steps=100",
                f"data.batch_size={self.batch_size}", f"data.seq_len={self.seq_len}",
                f"eval_every={max(1, steps // 5)}",
                f"checkpoint_every={max(1, steps // 3)}",
                "log_every=50", f"seed={self.seed}"]


def write_json(doc, path: Path) -> None:
    """Atomically: a reader sees the old file or the whole new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(doc, f, indent=1)
            f.write("\n")
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide a committed result from others
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def base(s: Settings) -> dict:
    """The base: the demo tokenizer (trained on the plays), pretrained on the plays mixed with
    arithmetic prose (experiments.tool_use.corpus says why)."""
    from evals.tasks import arithmetic
    from experiments.tool_use.corpus import write_mixed_corpus
    from train import config as train_config
    from train import data_source, prepare, pretrain

    done = s.out / "base" / "summary.json"
    if done.exists() and json.loads(done.read_text()).get("step") == s.base_steps:
        return json.loads(done.read_text())  # finished (its config may predate new fields)
    demo = train_config.load("demo")
    demo_dir, _ = data_source.resolve(demo)  # the demo shards and their 2048-token tokenizer
    tokenizer = Path(demo_dir) / data_source.tokenizer_file_name(demo_dir)
    corpus = s.out / "corpus"
    held_out = frozenset(arithmetic.problems(s.n_eval, seed=s.seed, digits=s.digits, ops=s.ops,
                                             stream="held_out"))
    if not (corpus / "mixed.json").exists():
        counts = write_mixed_corpus(corpus / "mixed.jsonl", s.base_arith_lines, seed=s.seed,
                                    held_out=held_out)
        write_json(counts, corpus / "mixed.json")
    prepare.prepare(str(corpus / "mixed.jsonl"), tokenizer, corpus / "tokens")
    cfg = train_config.apply_overrides(demo, [
        f"data.source={(corpus / 'tokens').resolve()}",
        f"model.n_layers={s.base_layers}", f"steps={s.base_steps}", f"optim.lr={s.base_lr}",
        f"eval_every={s.base_steps}", f"checkpoint_every={s.base_steps}", f"seed={s.seed}"])
    return pretrain.run(cfg, s.out / "base")


def val_problems(s: Settings, n_head: int) -> list:
    """Validation problems: the training stream's next `s.n_val` past both arms' (the head arm
    takes the most), so neither arm trains on them and none is one of the held-out problems."""
    from evals.tasks import arithmetic

    pool, _ = arithmetic.split(n_head + s.n_val, s.n_eval, seed=s.seed, digits=s.digits,
                               ops=s.ops)
    return pool[n_head:]


def data(s: Settings) -> dict:
    """Both arms' JSONL files and their token counts (data/data.json)."""
    from evals.tasks import arithmetic
    from experiments.tool_use.data import build_arms
    from infer.formats import tokenizer_file
    from train.datasets import conversations

    done = s.out / "data" / "data.json"
    if done.exists():
        return json.loads(done.read_text())
    tokenizer = tokenizer_file.load(s.out / "base" / "tokenizer.json")
    arms = build_arms(tokenizer, s.n_tool, seed=s.seed, digits=s.digits, ops=s.ops,
                      n_held_out=s.n_eval)
    val = val_problems(s, len(arms.head))
    for arm, convs in (("tool", arms.tool), ("head", arms.head)):
        conversations.write(s.out / "data" / f"{arm}.jsonl", convs, force=True)
        conversations.write(s.out / "data" / f"{arm}_val.jsonl",
                            [arithmetic.conversation(p, tool=arm == "tool") for p in val],
                            force=True)
    summary = {"conversations": {"tool": len(arms.tool), "head": len(arms.head)},
               "tokens": arms.tokens, "assistant_tokens": arms.learnt, "val": len(val)}
    write_json(summary, done)
    return summary


def latest_step(run: Path) -> int | None:
    """The step of a run's latest checkpoint, None before its first."""
    checkpoints = run / "checkpoints"
    steps = [int(d.name) for d in checkpoints.iterdir() if d.name.isdigit()] \
        if checkpoints.is_dir() else []
    return max(steps, default=None)


def sft(s: Settings, arm: str) -> dict:
    """Fine-tunes `arm` to each of s.sft_raised_from, then to s.sft_steps (a length the run has
    passed is skipped: a run can be continued, not shortened)."""
    from train import config as train_config
    from train import sft as sft_lib

    folder = s.out / "data"
    sets = [f"sft.base={(s.out / 'base').resolve()}",
            f"sft.data={(folder / f'{arm}.jsonl').resolve()}",
            f"sft.val={(folder / f'{arm}_val.jsonl').resolve()}"]
    out = s.out / f"sft_{arm}"
    for steps in (*s.sft_raised_from, s.sft_steps):
        if steps < (latest_step(out) or 0):
            continue
        cfg = train_config.apply_overrides(train_config.load("sft"),
                                           sets + s.sft_overrides(steps))
        summary = sft_lib.run(cfg, out)
    return summary


def evaluate(s: Settings, arm: str, tools: bool) -> dict:
    """The harness report of one cell: model `arm`, calculator on or off."""
    import infer
    from evals import harness
    from evals.tasks.arithmetic import ArithmeticTask

    path = s.out / "eval" / f"{arm}_tools_{'on' if tools else 'off'}.json"
    if path.exists():
        return json.loads(path.read_text())
    model = infer.load(str(s.out / f"sft_{arm}"))
    task = ArithmeticTask(digits=s.digits, ops=s.ops, tool=tools)
    report = harness.evaluate(model, task, n=s.n_eval, seed=s.seed,
                              max_new_tokens=s.max_new_tokens, batch_size=100,
                              tools=("calculator",) if tools else ())
    path.parent.mkdir(parents=True, exist_ok=True)
    harness.write_json(report, path)
    return report


def proxy(s: Settings, arm: str = "tool", n: int = 100) -> dict:
    """A cheap check while tuning, kept off the held-out problems: the model `arm` (its latest
    checkpoint, so a run in progress can be checked) with its calculator on `n` validation
    problems (trained on by neither arm). Choosing the steps on the held-out problems would
    leave the reported accuracy biased up; these cost nothing of that."""
    import infer
    from evals import harness
    from evals.tasks.arithmetic import ArithmeticTask

    checkpoints = s.out / f"sft_{arm}" / "checkpoints"
    step = latest_step(s.out / f"sft_{arm}")
    if step is None:
        raise FileNotFoundError(f"no checkpoint in {checkpoints}; run the sft stage first")
    path = s.out / "eval" / f"proxy_{arm}_step{step}_n{n}.json"
    if path.exists():
        return json.loads(path.read_text())
    head = json.loads((s.out / "data" / "data.json").read_text())["conversations"]["head"]
    task = ArithmeticTask(digits=s.digits, ops=s.ops, tool=arm == "tool")
    items = [task.item(p) for p in val_problems(s, head)[:n]]
    generate = harness.engine_generator(infer.load(str(checkpoints / str(step))),
                                        max_new_tokens=s.max_new_tokens,
                                        temperature=0.0,
                                        tools=("calculator",) if arm == "tool" else ())
    report = harness.run_generated(task, items, generate, seed=s.seed, batch_size=100)
    report["step"] = step
    path.parent.mkdir(parents=True, exist_ok=True)
    harness.write_json(report, path)
    return report


def diagnostic(s: Settings, n: int = 64) -> dict:
    """Does the tool model read the operands? The NLL of its call under the true prompt and
    under another problem's prompt (same length, same call): a model that copies finds the
    call much less likely after the wrong prompt; one that ignores the prompt scores both alike
    (what the one-layer demo model did)."""
    import infer
    from experiments.tool_use import diagnose

    path = s.out / "diagnostic.json"
    if path.exists():
        return json.loads(path.read_text())
    doc = diagnose.swapped_prompt_nll(infer.load(str(s.out / "sft_tool")), n=n, seed=s.seed,
                                      digits=s.digits, ops=s.ops)
    write_json(doc, path)
    return doc
