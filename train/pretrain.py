"""Pretraining: next-token prediction over a prepared corpus, the one training loop.

    summary = train.pretrain.run(cfg, "runs/demo")

Rerunning with the same config and output directory resumes from the latest checkpoint and ends
with the same parameters, bit for bit, as a run that was never interrupted.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path

import jax
import numpy as np
from jax.experimental import multihost_utils

import model
from model.config import ConfigError
from train import checkpoint, data_source
from train import config as train_config
from train.config import TrainConfig
from train.metrics import MetricsWriter, peak_flops_per_device
from train.metrics import read as read_metrics
from train.optim import make_optimizer
from train.step import all_finite, init_state, make_mesh, make_eval_step, make_train_step, state_shardings


class NonFiniteLossError(RuntimeError):
    """Training diverged; the last good checkpoint is kept."""


RUN_FILES = ("config.json", "metrics.jsonl", "checkpoints", "tb", "summary.json")


def _is_main() -> bool:
    return jax.process_index() == 0


def _sync(name: str) -> None:
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)


def _config_diff(old: dict, new: dict, prefix: str = "") -> list[str]:
    diffs = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            diffs += _config_diff(a, b, f"{prefix}{key}.")
        elif a != b:
            diffs.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return diffs


def check_out_dir(cfg: TrainConfig, out: Path, force: bool) -> bool:
    """Refuses an output directory holding something else than this run (unless `force`).
    Returns True when the directory must be cleared first (forced over a different run)."""
    if not out.exists() or not any(out.iterdir()):
        return False
    saved = out / "config.json"
    if saved.exists():
        old = json.loads(saved.read_text())
        new = json.loads(json.dumps(cfg.to_dict()))
        diffs = _config_diff(old, new)
        if not diffs:
            return False
        if force:
            return True
        raise ConfigError(
            f"{out} holds a run with a different config ({'; '.join(diffs[:8])}"
            f"{'; ...' if len(diffs) > 8 else ''}). Use another --out, or --force to start over "
            "there (its checkpoints and metrics are deleted).")
    if force:
        return True
    raise ConfigError(f"{out} is not empty and holds no twofiles run (no config.json); use "
                      "another --out, or --force to train there anyway")


def check_fits(cfg: TrainConfig) -> None:
    """Refuses a config whose training state and activations clearly exceed device memory."""
    n = model.count_params(cfg.model)["params"]
    fsdp_ways = cfg.mesh.fsdp * cfg.mesh.tensor
    state_bytes = 16 * n / fsdp_ways  # params, grads, two Adam moments, float32
    micro = cfg.data.batch_size // cfg.data.grad_accum
    data_ways = max(1, jax.device_count() // fsdp_ways)
    m, T = cfg.model, cfg.seq_len
    per_layer = 4 * T * (12 * m.d_model + 3 * m.d_ff + 2 * m.n_heads * T)  # float32 activations
    layers = 2 if m.remat else m.n_layers
    act_bytes = micro / data_ways * (layers * per_layer + 3 * 4 * T * m.vocab_size)
    need = state_bytes + act_bytes
    stats = jax.local_devices()[0].memory_stats() or {}
    have = stats.get("bytes_limit")
    if have is None:
        import os
        have = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / jax.local_device_count()
    if need > have:
        raise ConfigError(
            f"config needs about {need / 2**30:.1f} GiB per device ({n / 1e6:.0f}M parameters, "
            f"microbatch {micro} x {T} tokens) but a device has {have / 2**30:.1f} GiB; lower "
            "data.batch_size, raise data.grad_accum, set model.remat=true or use more devices")


def _tokens_per_byte(meta: dict, split: str) -> float:
    s = data_source.split_counts(meta, split)
    return s["tokens"] / s["bytes"]


def evaluate(eval_step, params, cfg: TrainConfig, data_dir: str, mesh, meta: dict) -> dict:
    """Validation loss (nats/token) and bits per byte over a fixed set of batches."""
    total, count = 0.0, 0.0
    for batch in data_source.eval_batches(data_dir, cfg, mesh):
        loss_sum, n = eval_step(params, batch)
        total += float(loss_sum)
        count += float(n)
    if count == 0:
        raise ConfigError(f"the validation split of {data_dir} yields no batch of "
                          f"{cfg.data.batch_size} x {cfg.seq_len} tokens")
    val_loss = total / count
    return {"val_loss": val_loss,
            "val_bpb": val_loss / math.log(2) * _tokens_per_byte(meta, "val")}


def _progress(cfg: TrainConfig, start: int, enabled: bool):
    from tqdm.auto import tqdm
    return tqdm(total=cfg.steps, initial=start, disable=not enabled, unit="step",
                dynamic_ncols=True, desc="pretrain")


def run(cfg: TrainConfig, out_dir, *, force: bool = False, progress: bool = True) -> dict:
    """Trains `cfg` into `out_dir` (resuming when it holds this run); returns the final summary:
    step, tokens, loss, val_loss, val_bpb, params, non_embedding_params, flops, wall_s."""
    wall_start = time.time()
    out = Path(out_dir)
    # Everything that can refuse the run happens before the first byte is written.
    train_config.validate(cfg, n_devices=jax.device_count())
    check_fits(cfg)
    clear = check_out_dir(cfg, out, force)
    data_dir, meta = data_source.resolve(cfg)

    if _is_main():
        if clear:
            for name in RUN_FILES:
                p = out / name
                shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
        out.mkdir(parents=True, exist_ok=True)
        train_config.save(cfg, out / "config.json")
        tokenizer_file = data_source.copy_tokenizer(data_dir, out)
    _sync("twofiles-out-dir")
    tokenizer_file = data_source.tokenizer_file_name(data_dir)

    mesh = make_mesh(cfg)
    optimizer = make_optimizer(cfg.optim, cfg.steps)
    key = jax.random.key(cfg.seed)
    mngr = checkpoint.manager(out, cfg.keep_checkpoints, cfg.async_checkpointing)
    loader = data_source.train_loader(data_dir, cfg, mesh)

    start = mngr.latest_step() or 0
    if start:
        shapes = jax.eval_shape(lambda: init_state(cfg, optimizer, mesh, key))
        target = checkpoint.abstract_like(shapes, state_shardings(cfg, optimizer, mesh))
        state, loader_state, _ = checkpoint.restore(mngr, start, target)
        loader.set_state(loader_state)
    else:
        state = init_state(cfg, optimizer, mesh, key)

    step_fn = make_train_step(cfg, mesh, optimizer)
    eval_fn = make_eval_step(cfg, mesh)
    writer = MetricsWriter(out, resume_step=start)
    counts = model.count_params(cfg.model)
    tokens_per_step = cfg.data.batch_size * cfg.seq_len
    flops_per_token = model.flops_per_token(cfg.model, seq_len=cfg.seq_len, training=True)
    peak, peak_note = peak_flops_per_device(cfg.peak_flops)
    peak_total = peak * jax.device_count()
    tokenizer_doc = json.loads((Path(data_dir) / tokenizer_file).read_text())
    ckpt_meta = {"config": cfg.to_dict(), "tokenizer_file": tokenizer_file,
                 "tokenizer_fingerprint": meta.get("tokenizer_fingerprint"),
                 "rng": np.asarray(jax.random.key_data(key)).tolist(), "seed": cfg.seed,
                 "peak_flops": peak_note}
    if _is_main() and start == 0:
        print(f"twofiles pretrain: {counts['params'] / 1e6:.2f}M params "
              f"({counts['non_embedding_params'] / 1e6:.2f}M non-embedding), "
              f"{cfg.steps} steps x {tokens_per_step} tokens, {jax.device_count()} device(s), "
              f"MFU against {peak_note}; out: {out}", flush=True)
    elif _is_main():
        print(f"twofiles pretrain: resuming {out} from step {start}", flush=True)

    last_eval: dict = {}
    last_loss = math.nan
    bar = _progress(cfg, start, progress and _is_main())
    t_last, step_last = time.time(), start

    def save(step: int, loss: float) -> None:
        if not (math.isfinite(loss) and bool(all_finite(state["params"]))):
            return  # never write a diverged state over the good ones
        checkpoint.save(mngr, step, state, loader.get_state(), {**ckpt_meta, "step": step},
                        tokenizer_doc)

    try:
        for step in range(start + 1, cfg.steps + 1):
            state, metrics = step_fn(state, next(loader))
            is_last = step == cfg.steps
            do_eval = is_last or (cfg.eval_every and step % cfg.eval_every == 0)
            do_ckpt = is_last or (cfg.checkpoint_every and step % cfg.checkpoint_every == 0)
            if not (do_eval or do_ckpt or step % cfg.log_every == 0):
                continue
            m = {k: float(v) for k, v in jax.device_get(metrics).items()}
            last_loss = m["loss"]
            now = time.time()
            tok_s = (step - step_last) * tokens_per_step / max(now - t_last, 1e-9)
            record = {"step": step, "loss": m["loss"], "lr": m["lr"],
                      "grad_norm": m["grad_norm"], "tokens": step * tokens_per_step,
                      "tokens_per_sec": tok_s, "mfu": tok_s * flops_per_token / peak_total}
            writer.write(record)
            bar.update(step - bar.n)
            bar.set_postfix(loss=f"{m['loss']:.3f}", tok_s=f"{tok_s:,.0f}", refresh=False)
            if not math.isfinite(m["loss"]):
                mngr.wait_until_finished()
                good = mngr.latest_step()
                raise NonFiniteLossError(
                    f"loss is {m['loss']} at step {step}: training diverged and was stopped. "
                    f"The last good checkpoint is step {good} in {out / 'checkpoints'}"
                    f"{'' if good else ' (none was written)'}; lower optim.lr, raise "
                    "optim.warmup_steps or check the data before rerunning.")
            if do_eval:
                last_eval = evaluate(eval_fn, state["params"], cfg, data_dir, mesh, meta)
                writer.write({"step": step, "tokens": step * tokens_per_step, **last_eval})
                bar.set_postfix(loss=f"{m['loss']:.3f}", val_bpb=f"{last_eval['val_bpb']:.3f}",
                                tok_s=f"{tok_s:,.0f}", refresh=False)
            if do_ckpt:
                save(step, m["loss"])
            t_last, step_last = time.time(), step
        bar.close()
        if not last_eval:  # resumed a finished run: report its final evaluation again
            last_eval = evaluate(eval_fn, state["params"], cfg, data_dir, mesh, meta)
            if _is_main():
                logged = [r["loss"] for r in read_metrics(out) if "loss" in r]
                last_loss = logged[-1] if logged else last_loss
        mngr.wait_until_finished()
    finally:
        bar.close()
        writer.close()
        mngr.close()

    summary = {"step": cfg.steps, "tokens": cfg.steps * tokens_per_step, "loss": last_loss,
               **last_eval, "params": counts["params"],
               "non_embedding_params": counts["non_embedding_params"],
               "flops": flops_per_token * cfg.steps * tokens_per_step,
               "wall_s": time.time() - wall_start, "out_dir": str(out),
               "checkpoint": str(out / "checkpoints" / str(cfg.steps))}
    if _is_main():
        tmp = out / "summary.json.tmp"
        tmp.write_text(json.dumps(summary, indent=2) + "\n")
        tmp.replace(out / "summary.json")
    return summary
