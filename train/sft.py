"""Supervised fine-tuning: the next-token objective on conversations, a short driver over the loop.

    python -m train sft --base smollm2 --data chats.jsonl --val val.jsonl --out runs/sft
    python -m train sft --base runs/demo --data chats.jsonl --out runs/sft --set lora.rank=8

The base is anything `infer.load` reads (a twofiles run, a GGUF, a Hugging Face directory, the
alias smollm2). Each conversation is rendered by the model's own chat template (infer.chat.
render: the loss mask is 1 on what the assistant writes, 0 on everything it is given), whole
conversations are packed into rows (train.packing: attention never crosses two of them), and the
loss is the mean over assistant tokens. With `lora.rank` > 0 only low-rank adapters are trained
and saved (model.lora), the base staying a frozen input; `infer.load` of the run merges them.

With `--set sft.eval_task=arithmetic sft.eval_problems=64` (and sft.eval_task_options, a JSON
object such as {"digits": [2, 2]}), each evaluation also logs the greedy accuracy on the task's
held-out problems with its Wilson interval (task_accuracy, _lo, _hi) in metrics.jsonl, through
the sampler RL uses (train.task_eval).

The run directory is a run every `infer` command reads: chat with it, export it. Its summary
holds the validation loss on assistant tokens before (the base) and after, the wall time and the
process's peak memory.
"""

from __future__ import annotations

import dataclasses
import functools
import resource
import time

import jax
from jax.sharding import NamedSharding, PartitionSpec as P

import model
from infer.chat.template import is_twofiles_tokenizer
from infer.formats import tokenizer_file
from model import lora
from model.config import ConfigError
from train import losses, loop, packing, run_dir, task_eval
from train import config as train_config
from train import state as state_lib
from train.config import TrainConfig
from train.datasets import conversations
from train.step import OnMesh, make_eval_step, make_mesh

MAX_AUTO_SEQ_LEN = 1024  # the longest rows data.seq_len 0 chooses
# Model fields a fine-tuning run may change; the rest are the base's shape.
TRAINING_MODEL_FIELDS = ("compute_dtype", "remat", "scan_layers")


def lora_loss(base_loss, alpha: float):
    """`base_loss` of the base (the frozen tree) with the adapters (the trained tree) merged."""
    def loss_fn(adapters, batch, frozen):
        return base_loss(lora.merge(frozen, adapters, alpha), batch, None)
    return loss_fn


def render_file(source, path: str, row_len: int, truncate: bool) -> tuple[list, dict]:
    """(ids, mask) of every conversation in `path`, and counts. A conversation longer than a row
    is refused, or with `truncate` cut to the row and counted."""
    from infer.chat.messages import ChatError
    from infer.chat.render import render

    examples, cut = [], 0
    for where, messages in conversations.iter_file(path):
        try:
            ids, mask = render(source, messages)
        except ChatError as e:
            raise ConfigError(f"{where}: {e}") from None
        if len(ids) > row_len:
            if not truncate:
                raise ConfigError(
                    f"{where}: the conversation is {len(ids)} tokens, longer than a training "
                    f"row of {row_len} (data.seq_len + 1); raise data.seq_len, shorten it, or "
                    "--set sft.truncate=true to cut such conversations (they are counted)")
            ids, mask, cut = ids[:row_len], mask[:row_len], cut + 1
        if sum(mask[1:]) == 0:
            raise ConfigError(f"{where}: nothing for the assistant to learn after rendering "
                              "(no assistant tokens within the row)")
        if all(mask):  # a renderer that lost the mask would train on the prompts too
            raise ConfigError(f"{where}: the loss mask covers every token, the prompt "
                              "included; the chat template gave no prompt tokens to skip")
        examples.append((ids, mask))
    tokens = sum(len(ids) for ids, _ in examples)
    learnt = sum(sum(m[1:]) for _, m in examples)
    return examples, {"conversations": len(examples), "truncated": cut, "tokens": tokens,
                      "assistant_tokens": learnt}


def evaluate(eval_step, params, frozen, batches: list) -> dict:
    """Mean loss over every assistant token of the validation conversations."""
    total = count = 0.0
    for batch in batches:
        loss_sum, n, _ = eval_step(params, batch, frozen)
        total, count = total + float(loss_sum), count + float(n)
    return {"val_loss": total / max(count, 1.0), "val_tokens": int(count)}


def task_probe(cfg: TrainConfig, base) -> tuple[task_eval.Sampler, list] | None:
    """(sampler, held-out items) of sft.eval_task, checked before anything is written; None
    without a task."""
    sft = cfg.sft
    if not sft.eval_task:
        return None
    if sft.eval_problems < 1 or sft.eval_max_new_tokens < 0:
        raise ConfigError(f"sft.eval_problems must be >= 1 and sft.eval_max_new_tokens >= 0, "
                          f"got {sft.eval_problems} and {sft.eval_max_new_tokens}")
    task = task_eval.load_task(sft.eval_task, sft.eval_task_options, "sft.eval_task")
    items = task.items(sft.eval_problems, seed=0)
    max_new = sft.eval_max_new_tokens or task.max_new_tokens
    task_eval.check_fits(base, items, max_new, "sft.eval_max_new_tokens")
    sampler = task_eval.Sampler(base, cfg.model, task, task_eval.task_tools(task), max_new)
    return sampler, items


def task_accuracy(sampler: task_eval.Sampler, params, items) -> dict:
    """The eval hook's task metrics: greedy accuracy and its Wilson 95% interval."""
    r = task_eval.greedy_accuracy(sampler, params, items)
    return {"task_accuracy": r["accuracy"], "task_accuracy_lo": r["lo"],
            "task_accuracy_hi": r["hi"], "task_n": r["n"]}


def _val_batches(examples, cfg: TrainConfig, mesh, pad_id: int) -> list:
    rows = packing.PackedBatches(examples, cfg.data.batch_size, cfg.seq_len + 1, cfg.seed,
                                 shuffle=False, pad_id=pad_id)
    on_mesh = OnMesh(rows, mesh)
    return [next(on_mesh) for _ in range(rows.batches_per_epoch())]


def resolve(cfg: TrainConfig, base_config: model.ModelConfig, n_batches: int) -> TrainConfig:
    """The run's config: the base's model shape (with the training fields the user set), and
    steps from sft.epochs when steps is 0."""
    user = cfg.model
    mcfg = dataclasses.replace(base_config, **{f: getattr(user, f) for f in TRAINING_MODEL_FIELDS})
    cfg = dataclasses.replace(cfg, model=mcfg)
    if cfg.steps == 0:
        cfg = dataclasses.replace(cfg, steps=max(1, cfg.sft.epochs * n_batches))
    return cfg


def stage(cfg: TrainConfig, base, examples: list, val: list, mesh, probe=None) -> loop.Stage:
    """Fine-tuning as the loop sees it: the base's parameters (or adapters over them);
    `probe` (task_probe) adds task accuracy to each evaluation."""
    full_loss = functools.partial(losses.masked_next_token_loss, cfg=cfg.model,
                                  kernels=cfg.kernels)
    base_abstract = state_lib.abstract_params(cfg.model, mesh)
    base_params = functools.lru_cache(1)(
        lambda: state_lib.place(base.params, base_abstract, cfg.sft.base))
    pad_id = 0
    batches = OnMesh(packing.PackedBatches(examples, cfg.data.batch_size, cfg.seq_len + 1,
                                            cfg.seed, pad_id=pad_id), mesh)
    if cfg.lora.rank:
        targets = lora.check_targets(cfg.lora.targets.split(","))
        replicated = NamedSharding(mesh, P())
        shapes = jax.eval_shape(lambda k: lora.init(cfg.model, cfg.lora.rank, targets, k),
                                jax.random.key(0))
        abstract = state_lib.with_shardings(shapes, jax.tree.map(lambda _: replicated, shapes))
        init = lambda: jax.jit(  # noqa: E731
            lambda k: lora.init(cfg.model, cfg.lora.rank, targets, k),
            out_shardings=state_lib.shardings_of(abstract))(jax.random.key(cfg.seed))
        loss_fn, frozen = lora_loss(full_loss, cfg.lora.alpha), base_params()
    else:
        abstract, init, loss_fn, frozen = base_abstract, base_params, full_loss, None
    eval_step = make_eval_step(loss_fn, state_lib.shardings_of(abstract), mesh)
    val_batches = _val_batches(val, cfg, mesh, pad_id) if val else []
    hooks = []
    if val_batches:
        hooks.append(lambda params: evaluate(eval_step, params, frozen, val_batches))
    if probe is not None:
        merged = ((lambda p: lora.merge(frozen, p, cfg.lora.alpha)) if cfg.lora.rank
                  else (lambda p: p))
        hooks.append(lambda params: task_accuracy(probe[0], merged(params), probe[1]))
    meta = {"stage": "sft", "base": cfg.sft.base, "lora": dataclasses.asdict(cfg.lora)
            if cfg.lora.rank else None}
    tokenizer_doc = None  # another tokenizer: a run of it loads the base's (infer.load)
    if is_twofiles_tokenizer(base.tokenizer):
        tokenizer_doc = tokenizer_file.to_doc(base.tokenizer)
        meta["tokenizer_fingerprint"] = tokenizer_doc["fingerprint"]
    return loop.Stage(
        name="sft", loss_fn=loss_fn, batches=batches, abstract_params=abstract,
        init_params=init, frozen=frozen, tokenizer_doc=tokenizer_doc, meta=meta,
        evaluate=(lambda params: {k: v for hook in hooks for k, v in hook(params).items()})
        if hooks else None,
        tokens_per_step=cfg.data.batch_size * cfg.seq_len)


def _peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB


def run(cfg: TrainConfig, out_dir, *, force: bool = False, progress: bool = True) -> dict:
    """Fine-tunes cfg.sft.base on cfg.sft.data into `out_dir` (resuming when it holds this run);
    returns the summary: val_loss before and after, tokens, wall time, peak memory."""
    import infer

    started = time.time()
    if not cfg.sft.base or not cfg.sft.data:
        raise ConfigError("sft needs a base model (--base) and conversations (--data)")
    base = infer.load(cfg.sft.base)
    cap = cfg.data.seq_len or min(base.config.max_seq_len, MAX_AUTO_SEQ_LEN)
    examples, counts = render_file(base, cfg.sft.data, cap + 1, cfg.sft.truncate)
    # data.seq_len 0: rows as long as the longest conversation (in steps of 64), not the
    # model's whole context: short chats then pack many to a row instead of padding it.
    longest = max(len(ids) for ids, _ in examples)
    seq_len = cfg.data.seq_len or min(cap, -(-(longest - 1) // 64) * 64)
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, seq_len=seq_len))
    row_len = seq_len + 1
    val, val_counts = (render_file(base, cfg.sft.val, row_len, cfg.sft.truncate)
                       if cfg.sft.val else ([], {}))
    n_batches = packing.PackedBatches(examples, cfg.data.batch_size, row_len, cfg.seed,
                                      shuffle=False).batches_per_epoch()
    cfg = resolve(cfg, base.config, n_batches)
    train_config.validate(cfg, n_devices=jax.device_count())
    probe = task_probe(cfg, base)
    plan = run_dir.plan(out_dir, cfg, force=force)
    if plan.finished:
        plan.say_finished("sft", cfg.steps)
        return plan.summary
    mesh = make_mesh(cfg)
    st = stage(cfg, base, examples, val, mesh, probe)
    if progress:
        print(f"twofiles sft: {counts['conversations']} conversations ({counts['tokens']:,} "
              f"tokens, {counts['assistant_tokens']:,} learnt, {counts['truncated']} truncated) "
              f"in {n_batches} batches of {cfg.data.batch_size} x {row_len - 1}; "
              f"{'LoRA rank ' + str(cfg.lora.rank) if cfg.lora.rank else 'full fine-tuning'}",
              flush=True)
    before = {}
    if st.evaluate is not None and not plan.start_step:
        before = st.evaluate(st.init_params())
    result = loop.run(cfg, plan, st, mesh, progress=progress, started=started)
    saved_before = (plan.saved_meta or {}).get("base_val_loss")
    summary = {"step": cfg.steps, "loss": result.loss, **result.eval,
               "base_val_loss": before.get("val_loss", saved_before),
               **({"base_task_accuracy": before["task_accuracy"]}
                  if "task_accuracy" in before else {}),
               "train": counts, "val": val_counts,
               "trained_params": sum(x.size for x in jax.tree.leaves(result.state["params"])),
               "lora_rank": cfg.lora.rank, "wall_s": result.wall_s,
               "peak_rss_gib": round(_peak_rss_gib(), 3), "out_dir": str(plan.path),
               "checkpoint": str(plan.path / "checkpoints" / str(cfg.steps))}
    plan.write_summary(summary)
    return summary
