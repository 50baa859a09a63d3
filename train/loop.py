"""The one training loop: it knows no stage. A stage is a short driver that supplies a Stage:

    plan = run_dir.plan(out, cfg, force=force)           # refuse before writing
    mesh = step.make_mesh(cfg)
    stage = loop.Stage(
        name="sft",
        loss_fn=functools.partial(losses.masked_next_token_loss, cfg=model_cfg),
        batches=packed_conversations,                  # iterator with get_state/set_state
        abstract_params=state.abstract_params(model_cfg, mesh),
        init_params=lambda: state.load_params(base, mesh)[1],  # or state.random_params(...)
        evaluate=lambda params: {"val_loss": ...},     # every eval_every steps and at the end
        trainable=None,                                # or a tree of bools: LoRA, probes
        frozen=None,                                   # a tree the loss reads, never trains
        tokenizer_doc=doc, meta={"tokenizer_fingerprint": doc["fingerprint"]})
    result = loop.run(cfg, plan, stage, mesh)
    plan.write_summary({..., "wall_s": result.wall_s})

The loop owns: resuming (state, optimizer and the iterator's position from the latest
checkpoint, so a resumed run ends bit for bit where an uninterrupted one does), metrics
(metrics.jsonl and TensorBoard), the progress bar with tokens/s, the evaluation hook,
checkpoints, the non-finite guard, and Ctrl-C: the first one stops at the next step boundary,
saves that step, and raises Interrupted (which names the step a rerun resumes from); a second
one stops at once.
"""

from __future__ import annotations

import dataclasses
import math
import signal
import threading
import time
from typing import Any, Callable

import jax
import numpy as np

import model
from train import checkpoint
from train import state as state_lib
from train.config import TrainConfig
from train.metrics import MetricsWriter, peak_flops_per_device
from train.metrics import read as read_metrics
from train.optim import make_optimizer, schedule
from train import run_dir
from train.run_dir import Plan
from train.step import all_finite, make_step


class NonFiniteLossError(RuntimeError):
    """Training diverged; the last good checkpoint is kept."""


class Interrupted(Exception):
    """Ctrl-C stopped the run cleanly; `resume_step` is where a rerun continues."""

    def __init__(self, step: int, resume_step: int):
        self.step, self.resume_step = step, resume_step
        super().__init__(f"interrupted at step {step}; rerun the same command to resume from "
                         f"step {resume_step}")


@dataclasses.dataclass
class Stage:
    """What a stage gives the loop (see the module docstring)."""

    name: str
    loss_fn: Callable  # (params, batch, frozen) -> (loss_sum, count, metrics), sums
    batches: Any  # iterator of batches with get_state() -> JSON dict and set_state(dict);
    # or, for batches made from the live parameters, with next_for(params) instead of next()
    abstract_params: Any  # ShapeDtypeStructs with shardings: where params live and restore to
    init_params: Callable[[], Any] | None = None  # a new run's params; None: the model's random
    evaluate: Callable[[Any], dict] | None = None  # params -> metrics
    trainable: Any = None  # tree of bools like params: update only these leaves
    frozen: Any = None
    tokenizer_doc: dict | None = None  # saved inside every checkpoint
    meta: dict = dataclasses.field(default_factory=dict)  # saved in every checkpoint's meta
    tokens_per_step: int | None = None  # for tokens/s and MFU; default batch_size x seq_len


@dataclasses.dataclass
class Result:
    state: dict
    step: int
    loss: float  # the last logged training loss
    eval: dict  # the last evaluation's metrics
    wall_s: float  # training wall time over every session of the run


class _StopOnCtrlC:
    """Turns the first SIGINT into a flag the loop reads between steps (single process, main
    thread only: several processes must stop together, so they keep the default)."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread() and jax.process_count() == 1:
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def _is_main() -> bool:
    return jax.process_index() == 0


def _restore_or_start(cfg, plan: Plan, stage: Stage, optimizer, mesh, mngr, key):
    abstract = stage.abstract_params
    if plan.start_step:
        target = state_lib.abstract_state(abstract, optimizer, mesh)
        state, batches_state, _ = checkpoint.restore(mngr, plan.start_step, target)
        stage.batches.set_state(batches_state)
        return state
    if stage.init_params is None:
        params = state_lib.random_params(cfg.model, mesh, key)
    else:
        params = stage.init_params()
    return state_lib.fresh(params, optimizer, abstract, mesh)


def _next_batch(batches, state):
    """The next batch; batches made from the live parameters (RL's rollouts) define
    `next_for(params)` and are handed the parameters this step updates."""
    if hasattr(batches, "next_for"):
        return batches.next_for(state["params"])
    return next(batches)


def _progress(cfg: TrainConfig, name: str, start: int, enabled: bool):
    from tqdm.auto import tqdm
    return tqdm(total=cfg.steps, initial=start, disable=not enabled, unit="step",
                dynamic_ncols=True, desc=name)


def run(cfg: TrainConfig, plan: Plan, stage: Stage, mesh, *, progress: bool = True,
        started: float | None = None) -> Result:
    """Trains `stage` from plan.start_step to cfg.steps into plan.path (created here, after the
    tokenizer check). `started`: when the session began (for wall time; default now)."""
    started = time.time() if started is None else started
    plan.check_tokenizer(stage.meta.get("tokenizer_fingerprint"), f"the {stage.name} data")
    plan.create(cfg, stage.tokenizer_doc)
    out, start = plan.path, plan.start_step
    optimizer = state_lib.masked_optimizer(make_optimizer(cfg.optim, cfg.steps), stage.trainable)
    key = jax.random.key(cfg.seed)
    mngr = checkpoint.manager(out, cfg.keep_checkpoints, cfg.async_checkpointing)
    try:
        state = _restore_or_start(cfg, plan, stage, optimizer, mesh, mngr, key)
    except BaseException:
        mngr.close()
        raise
    shardings = state_lib.state_shardings(stage.abstract_params, optimizer, mesh)
    step_fn = make_step(stage.loss_fn, optimizer, shardings, mesh,
                        lr_at=schedule(cfg.optim, cfg.steps), grad_accum=cfg.data.grad_accum,
                        trainable=stage.trainable)
    tokens_per_step = stage.tokens_per_step or cfg.data.batch_size * cfg.seq_len
    flops_per_token = model.flops_per_token(cfg.model, seq_len=cfg.seq_len, training=True)
    peak, peak_note = peak_flops_per_device(cfg.peak_flops, cfg.model.compute_dtype)
    peak_total = peak * jax.device_count()
    wall_before = float((plan.saved_meta or {}).get("wall_s", 0.0)) if start else 0.0
    ckpt_meta = {"config": cfg.to_dict(), "tokenizer_file": run_dir.TOKENIZER_FILE,
                 "rng": np.asarray(jax.random.key_data(key)).tolist(), "seed": cfg.seed,
                 "peak_flops": peak_note, **stage.meta}
    if _is_main():
        counts = model.count_params(cfg.model)
        if start == 0:
            print(f"twofiles {stage.name}: {counts['params'] / 1e6:.2f}M params "
                  f"({counts['non_embedding_params'] / 1e6:.2f}M non-embedding), "
                  f"{cfg.steps} steps x {tokens_per_step} tokens, {jax.device_count()} "
                  f"device(s), MFU against {peak_note}; out: {out}", flush=True)
        else:
            more = (f" ({', '.join(plan.extended)}; the learning-rate schedule now spans "
                    f"{cfg.steps} steps)" if any(d.startswith("steps:") for d in plan.extended)
                    else "")
            print(f"twofiles {stage.name}: resuming {out} from step {start}{more}", flush=True)

    writer = MetricsWriter(out, resume_step=start)
    bar = _progress(cfg, stage.name, start, progress and _is_main())
    last_eval: dict = {}
    last_loss = math.nan
    t_last, step_last = time.time(), start

    def save(step: int, loss: float) -> None:
        if not (math.isfinite(loss) and bool(all_finite(state["params"]))):
            return  # never write a diverged state over the good ones
        if step in mngr.all_steps():
            return
        wall = wall_before + time.time() - started
        checkpoint.save(mngr, step, state, stage.batches.get_state(),
                        {**ckpt_meta, "step": step, "wall_s": wall}, stage.tokenizer_doc)

    step = start
    try:
        with _StopOnCtrlC() as stop:
            for step in range(start + 1, cfg.steps + 1):
                state, metrics = step_fn(state, _next_batch(stage.batches, state), stage.frozen)
                is_last = step == cfg.steps
                do_eval = stage.evaluate is not None and (
                    is_last or (cfg.eval_every and step % cfg.eval_every == 0))
                do_ckpt = is_last or (cfg.checkpoint_every and step % cfg.checkpoint_every == 0)
                logged = do_eval or do_ckpt or step % cfg.log_every == 0
                if not (logged or stop.requested):
                    continue
                m = {k: float(v) for k, v in jax.device_get(metrics).items()}
                last_loss = m["loss"]
                if logged:
                    now = time.time()
                    tok_s = (step - step_last) * tokens_per_step / max(now - t_last, 1e-9)
                    writer.write({"step": step, **m, "tokens": step * tokens_per_step,
                                  "tokens_per_sec": tok_s,
                                  "mfu": tok_s * flops_per_token / peak_total})
                    bar.update(step - bar.n)
                    bar.set_postfix(loss=f"{m['loss']:.3f}", tok_s=f"{tok_s:,.0f}",
                                    refresh=False)
                if not math.isfinite(m["loss"]):
                    _diverged(mngr, m["loss"], step, out)
                if do_eval:
                    last_eval = stage.evaluate(state["params"])
                    writer.write({"step": step, "tokens": step * tokens_per_step, **last_eval})
                if do_ckpt or stop.requested:
                    save(step, m["loss"])
                if logged:  # evaluations and checkpoints are not counted as training time
                    t_last, step_last = time.time(), step
                if stop.requested and not is_last:
                    mngr.wait_until_finished()
                    raise Interrupted(step, mngr.latest_step() or 0)
        bar.close()
        if not last_eval and stage.evaluate is not None:
            # Nothing trained this session (a run stopped after its last checkpoint): report
            # its final evaluation again, and the last loss it logged.
            last_eval = stage.evaluate(state["params"])
            if _is_main():
                seen = [r["loss"] for r in read_metrics(out) if "loss" in r]
                last_loss = seen[-1] if seen else last_loss
        mngr.wait_until_finished()
    finally:
        bar.close()
        writer.close()
        mngr.close()
        if hasattr(stage.batches, "close"):
            stage.batches.close()
    return Result(state=state, step=cfg.steps, loss=last_loss, eval=last_eval,
                  wall_s=wall_before + time.time() - started)


def _diverged(mngr, loss: float, step: int, out) -> None:
    mngr.wait_until_finished()
    good = mngr.latest_step()
    raise NonFiniteLossError(
        f"loss is {loss} at step {step}: training diverged and was stopped. The last good "
        f"checkpoint is step {good} in {out / 'checkpoints'}"
        f"{'' if good else ' (none was written)'}; lower optim.lr, raise optim.warmup_steps or "
        "check the data before rerunning.")
