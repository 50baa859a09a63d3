"""Pretraining: next-token prediction over a prepared corpus, a short driver over train.loop.

    summary = train.pretrain.run(cfg, "runs/demo")

Rerunning with the same config and output directory resumes from the latest checkpoint and ends
with the same parameters, bit for bit, as a run that was never interrupted; rerunning with a
larger `steps` continues a finished run.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import jax

import model
from model.config import ConfigError
from train import data_source, losses, loop, run_dir
from train import config as train_config
from train import state as state_lib
from train.config import TrainConfig
from train.step import make_eval_step, make_mesh

NonFiniteLossError = loop.NonFiniteLossError


def evaluate(eval_step, params, cfg: TrainConfig, data_dir: str, mesh, meta: dict) -> dict:
    """Validation loss (nats/token) and bits per byte over a fixed set of batches."""
    total, count = 0.0, 0.0
    for batch in data_source.eval_batches(data_dir, cfg, mesh):
        loss_sum, n, _ = eval_step(params, batch)
        total += float(loss_sum)
        count += float(n)
    if count == 0:
        raise ConfigError(f"the validation split of {data_dir} yields no batch of "
                          f"{cfg.data.batch_size} x {cfg.seq_len} tokens")
    val_loss = total / count
    split = data_source.split_counts(meta, "val")
    return {"val_loss": val_loss,
            "val_bpb": val_loss / math.log(2) * split["tokens"] / split["bytes"]}


def stage(cfg: TrainConfig, data_dir: str, meta: dict, mesh) -> loop.Stage:
    """Pretraining as the loop sees it: random parameters, every token counted."""
    loss_fn = losses.next_token_loss(cfg.model, cfg.kernels)
    abstract = state_lib.abstract_params(cfg.model, mesh)
    eval_step = make_eval_step(loss_fn, state_lib.shardings_of(abstract), mesh)
    tokenizer_file = Path(data_dir) / data_source.tokenizer_file_name(data_dir)
    tokenizer_doc = json.loads(tokenizer_file.read_text())
    return loop.Stage(
        name="pretrain", loss_fn=loss_fn, batches=data_source.train_loader(data_dir, cfg, mesh),
        abstract_params=abstract,
        evaluate=lambda params: evaluate(eval_step, params, cfg, data_dir, mesh, meta),
        tokenizer_doc=tokenizer_doc,
        meta={"tokenizer_fingerprint": meta.get("tokenizer_fingerprint",
                                                tokenizer_doc.get("fingerprint")),
              "data": data_dir})


def run(cfg: TrainConfig, out_dir, *, force: bool = False, progress: bool = True) -> dict:
    """Trains `cfg` into `out_dir` (resuming when it holds this run); returns the final summary:
    step, tokens, loss, val_loss, val_bpb, params, non_embedding_params, flops, wall_s."""
    started = time.time()
    # Everything that can refuse the run happens before the first byte is written.
    train_config.validate(cfg, n_devices=jax.device_count())
    state_lib.check_fits(cfg)
    plan = run_dir.plan(out_dir, cfg, force=force)
    if plan.finished:
        plan.say_finished("pretrain", cfg.steps)
        return plan.summary
    data_dir, meta = data_source.resolve(cfg)
    mesh = make_mesh(cfg)
    result = loop.run(cfg, plan, stage(cfg, data_dir, meta, mesh), mesh, progress=progress,
                      started=started)
    counts = model.count_params(cfg.model)
    tokens = cfg.steps * cfg.data.batch_size * cfg.seq_len
    flops_per_token = model.flops_per_token(cfg.model, seq_len=cfg.seq_len, training=True)
    summary = {"step": cfg.steps, "tokens": tokens, "loss": result.loss, **result.eval,
               "params": counts["params"], "non_embedding_params": counts["non_embedding_params"],
               "flops": flops_per_token * tokens, "wall_s": result.wall_s,
               "out_dir": str(plan.path),
               "checkpoint": str(plan.path / "checkpoints" / str(cfg.steps))}
    plan.write_summary(summary)
    return summary
