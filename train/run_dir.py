"""The run directory: what may be trained into it, and the run's own files.

    plan = run_dir.plan(out, cfg, force=False)   # checks only; nothing is written
    plan.check_tokenizer(fingerprint, where)     # a resumed run keeps its tokenizer
    plan.create(cfg, tokenizer_doc)              # process 0 writes config (and tokenizer)
    ...train...
    plan.write_summary(summary)

An empty or missing directory starts a run. One holding this run (config.json equal up to
EXTENDING_FIELDS) resumes it from its latest checkpoint; raising `steps` continues a finished
run. One holding a run with another config is refused, or with --force has that run's own files
replaced. A directory holding anything that is not a run's own file is always refused, even with
--force: the user's files are never deleted.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path

import jax
from jax.experimental import multihost_utils

from model.config import ConfigError
from train import config as train_config
from train.config import TrainConfig

TOKENIZER_FILE = "tokenizer.json"
RUN_FILES = ("config.json", "metrics.jsonl", "checkpoints", "tb", "summary.json", TOKENIZER_FILE)

# Fields a rerun may change without becoming another run: they decide how long it trains
# (steps, only upwards: the learning-rate schedule then spans the new length) and how often it
# reports and saves, never what a step computes.
# `optim.warmup_steps` and `data.cache_dir` too: `--set steps=N` alone scales the warmup with the
# run (train.config.apply_overrides), and the cache is a location, not a setting.
EXTENDING_FIELDS = ("steps", "optim.warmup_steps", "eval_every", "checkpoint_every",
                    "keep_checkpoints", "log_every", "async_checkpointing", "peak_flops",
                    "data.cache_dir")


class RunDirError(ConfigError):
    """An output directory that cannot hold this run; the message says what to do."""


def _is_main() -> bool:
    return jax.process_index() == 0


def sync(name: str) -> None:
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)


def config_diff(old: dict, new: dict, prefix: str = "") -> list[str]:
    """'a.b: old -> new' for every field that differs."""
    diffs = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            diffs += config_diff(a, b, f"{prefix}{key}.")
        elif a != b:
            diffs.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return diffs


def _with_defaults(saved: dict) -> dict:
    """A saved config with the fields the code has gained since filled in with their defaults:
    a new field's default is the behaviour from before it existed, so a run saved without it is
    still this run. A config the code can no longer read is compared as it was saved."""
    try:
        return json.loads(json.dumps(train_config.from_dict(saved).to_dict()))
    except ConfigError:
        return saved


def _is_own(name: str, own: tuple[str, ...]) -> bool:
    # Temporary names of the atomic writes below, left by a kill mid-write, are the run's too.
    base = name.removeprefix(".").removesuffix(".tmp")
    return base in own


def _check_is_directory(out: Path) -> None:
    for p in (out, *out.parents):
        if p.exists():
            if not p.is_dir():
                what = "--out" if p == out else f"--out {out}: its parent"
                raise RunDirError(f"{what} {p} is a file, not a directory; give a directory "
                                  "for the run (it is created when missing)")
            return


def _saved_meta(out: Path) -> tuple[int, dict | None]:
    """(latest checkpoint step or 0, its meta)."""
    if not (out / "checkpoints").is_dir():
        return 0, None
    import orbax.checkpoint as ocp

    from train import checkpoint

    mngr = checkpoint.manager(out, read_only=True)
    try:
        step = mngr.latest_step()
        if step is None:
            return 0, None
        meta = mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
        return step, meta
    finally:
        mngr.close()


@dataclasses.dataclass
class Plan:
    """What a run does with its directory, decided before anything is written."""

    path: Path
    clear: bool = False  # replace an old run's files (--force over a different config)
    start_step: int = 0  # the checkpoint a resumed run continues from (0: a new run)
    saved_meta: dict | None = None  # that checkpoint's meta
    extended: list[str] = dataclasses.field(default_factory=list)  # changed EXTENDING_FIELDS
    summary: dict | None = None  # set when the run is finished: nothing to train
    own_files: tuple[str, ...] = RUN_FILES

    @property
    def finished(self) -> bool:
        return self.summary is not None

    def check_tokenizer(self, fingerprint: str | None, where: str) -> None:
        """Refuses to resume with data of another tokenizer than the checkpoint's."""
        saved = (self.saved_meta or {}).get("tokenizer_fingerprint")
        if self.start_step and saved and fingerprint and saved != fingerprint:
            raise RunDirError(
                f"{where} uses tokenizer {fingerprint}, but the run in {self.path} was trained "
                f"with tokenizer {saved} (its checkpoint step {self.start_step} and "
                f"{TOKENIZER_FILE}); resume it with the data it was trained on, or train into "
                "another --out")

    def create(self, cfg: TrainConfig, tokenizer_doc: dict | None = None) -> None:
        """Process 0: clears an old run's files when forced, creates the directory, saves the
        config (atomically) and, for a new run only, the tokenizer. Every process waits."""
        if _is_main():
            try:
                if self.clear:
                    for name in os.listdir(self.path):
                        p = self.path / name
                        shutil.rmtree(p) if p.is_dir() else p.unlink()
                self.path.mkdir(parents=True, exist_ok=True)
                train_config.save(cfg, self.path / "config.json")
                if self.start_step and self.extended:
                    (self.path / "summary.json").unlink(missing_ok=True)  # now stale
                if not self.start_step and tokenizer_doc is not None:
                    write_json(self.path / TOKENIZER_FILE, tokenizer_doc)
            except OSError as e:
                raise RunDirError(f"cannot write the run directory {self.path}: {e.strerror}"
                                  ) from None
        sync("twofiles-run-dir")

    def say_finished(self, stage: str, steps: int) -> None:
        """The one line a rerun of a finished run prints (process 0) before returning its
        summary."""
        if _is_main():
            print(f"twofiles {stage}: {self.path} finished at step {steps}; nothing to do "
                  "(raise steps to continue it)", flush=True)

    def write_summary(self, summary: dict) -> None:
        if _is_main():
            write_json(self.path / "summary.json", summary, indent=2)


def write_json(path: Path, obj, indent: int | None = None) -> None:
    """Writes JSON under a temporary name, then renames: a reader sees all or nothing."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=indent) + "\n")
    os.replace(tmp, path)


def _foreign(out: Path, own: tuple[str, ...]) -> list[str]:
    return sorted(n for n in os.listdir(out) if not _is_own(n, own))


def plan(out, cfg: TrainConfig, *, force: bool = False, own_files: tuple[str, ...] = RUN_FILES
         ) -> Plan:
    """Decides between a new run, resuming, continuing and refusing; writes nothing. A stage
    that writes more files beside the run's passes them in `own_files`."""
    out = Path(out)
    _check_is_directory(out)
    if not out.exists() or not os.listdir(out):
        return Plan(out, own_files=own_files)
    foreign = _foreign(out, own_files)
    if foreign:
        shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
        raise RunDirError(f"{out} holds files that are not a twofiles run ({shown}); they are "
                          "never deleted, --force included: use an empty or new --out")
    saved = out / "config.json"
    if not saved.exists():
        if force:
            return Plan(out, clear=True, own_files=own_files)
        raise RunDirError(f"{out} holds the remains of a run without its config.json; use "
                          "another --out, or --force to start over there")
    old = _with_defaults(json.loads(saved.read_text()))
    new = json.loads(json.dumps(cfg.to_dict()))
    changed = config_diff(old, new)
    extended = [d for d in changed if d.split(":")[0] in EXTENDING_FIELDS]
    other = [d for d in changed if d not in extended]
    if isinstance(old.get("steps"), int) and cfg.steps < old["steps"]:
        other.append(f"steps: {old['steps']} -> {cfg.steps} (a run can be continued, not "
                     "shortened)")
    if other:
        if force:
            return Plan(out, clear=True, own_files=own_files)
        shown = "; ".join(other[:8]) + ("; ..." if len(other) > 8 else "")
        raise RunDirError(f"{out} holds a run with a different config ({shown}). Use another "
                          "--out, or --force to start over there (its checkpoints and metrics "
                          "are deleted)")
    start, meta = _saved_meta(out)
    summary = None
    summary_path = out / "summary.json"
    if start >= cfg.steps and summary_path.exists():
        saved_summary = json.loads(summary_path.read_text())
        if saved_summary.get("step") == cfg.steps:
            summary = saved_summary
    return Plan(out, start_step=start, saved_meta=meta, extended=extended, summary=summary,
                own_files=own_files)
