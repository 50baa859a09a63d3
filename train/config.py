"""The training configuration: frozen dataclasses, named presets (JSON files) and `--set` overrides.

A config is resolved once (named preset -> overrides -> validation) and saved with the run as
`OUT/config.json`; a rerun compares against it to decide between resuming and refusing.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Iterable

import model
from model.config import ConfigError, parse_value, split_override

CONFIG_DIR = Path(__file__).parent / "configs"
SCHEDULES = ("cosine", "wsd", "constant")


@dataclasses.dataclass(frozen=True)
class DataConfig:
    # A prepared directory (holds the metadata written by train.prepare), or a source that
    # train.prepare understands ("demo", a text/jsonl/parquet file or folder, "tfds:NAME"),
    # prepared on first use into cache_dir and reused afterwards.
    source: str = "demo"
    cache_dir: str = "data/prepared"
    batch_size: int = 16  # global sequences per optimizer step
    grad_accum: int = 1  # microbatches per optimizer step; batch_size must divide evenly
    seq_len: int = 0  # 0 means the model's context, model.max_seq_len
    eval_batches: int = 8  # validation batches (of batch_size sequences) per evaluation


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    lr: float = 3e-3  # peak learning rate
    schedule: str = "cosine"  # cosine | wsd (warmup-stable-decay) | constant (after warmup)
    warmup_steps: int = 100
    min_lr_ratio: float = 0.1  # final lr = lr * min_lr_ratio
    decay_fraction: float = 0.2  # wsd: the last fraction of steps decays linearly
    weight_decay: float = 0.1  # decoupled (AdamW)
    decay_norms_and_embeddings: bool = False  # weight decay on norm gains and the embedding too
    b1: float = 0.9
    b2: float = 0.95
    eps: float = 1e-8
    clip_norm: float = 1.0  # global gradient norm; 0 disables clipping


@dataclasses.dataclass(frozen=True)
class MeshConfig:
    data: int = -1  # -1: all devices not used by the other axes
    fsdp: int = 1
    tensor: int = 1


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    model: model.ModelConfig = dataclasses.field(default_factory=model.ModelConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    mesh: MeshConfig = dataclasses.field(default_factory=MeshConfig)
    steps: int = 100  # optimizer updates
    eval_every: int = 50  # 0: only at the end
    checkpoint_every: int = 50  # 0: only at the end
    keep_checkpoints: int = 3
    log_every: int = 10
    seed: int = 0
    async_checkpointing: bool = True
    peak_flops: float = 0.0  # per device, for MFU; 0: the stated table in train.metrics

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def seq_len(self) -> int:
        return self.data.seq_len or self.model.max_seq_len


_SECTIONS = {"model": model.ModelConfig, "data": DataConfig, "optim": OptimConfig,
             "mesh": MeshConfig}


def _section(cls, d: dict, where: str):
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {unknown}; known: {sorted(known)}")
    return cls(**d)


def from_dict(d: dict[str, Any], where: str = "config") -> TrainConfig:
    """A TrainConfig from a (possibly partial) dict. `model` may name a preset:
    {"preset": "demo", "n_layers": 6} is the demo preset with six layers."""
    d = dict(d)
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {unknown}; known: {sorted(known)}")
    if "model" in d:
        m = dict(d["model"])
        base = model.preset(m.pop("preset")).to_dict() if "preset" in m else {}
        d["model"] = model.ModelConfig.from_dict({**base, **m})
    for name, cls in _SECTIONS.items():
        if name != "model" and name in d:
            d[name] = _section(cls, d[name], f"{where}.{name}")
    return TrainConfig(**d)


def names() -> list[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.json"))


def load(name_or_file: str) -> TrainConfig:
    """A named config (train/configs/NAME.json) or a JSON file path."""
    path = Path(name_or_file)
    if not path.suffix and (CONFIG_DIR / f"{name_or_file}.json").exists():
        path = CONFIG_DIR / f"{name_or_file}.json"
    if not path.is_file():
        raise ConfigError(f"--config {name_or_file!r} is neither a named config "
                          f"({', '.join(names())}) nor a JSON file")
    try:
        d = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ConfigError(f"config file {path} is not valid JSON: {e}") from None
    return from_dict(d, where=str(path))


def apply_overrides(cfg: TrainConfig, overrides: Iterable[str]) -> TrainConfig:
    """`cfg` with `a.b=value` overrides applied, e.g. ["steps=10", "model.n_layers=2"]."""
    overrides = list(overrides)
    # Model fields change together (n_heads=6 with n_kv_heads=6 may be invalid one at a time).
    model_items = [item[len("model."):] for item in overrides if item.startswith("model.")]
    if model_items:
        cfg = dataclasses.replace(cfg, model=model.apply_overrides(cfg.model, model_items))
    for item in overrides:
        key, value = split_override(item)
        head, _, rest = key.partition(".")
        if head == "model" and rest:
            continue
        if head in _SECTIONS and rest:
            section = getattr(cfg, head)
            fields = {f.name for f in dataclasses.fields(section)}
            if rest not in fields:
                raise ConfigError(f"--set {key}: {head} has no field {rest!r}; "
                                  f"fields: {', '.join(sorted(fields))}")
            new = dataclasses.replace(
                section, **{rest: parse_value(value, getattr(section, rest), f"--set {key}")})
            cfg = dataclasses.replace(cfg, **{head: new})
            continue
        fields = {f.name for f in dataclasses.fields(cfg)} - set(_SECTIONS)
        if key not in fields:
            raise ConfigError(f"--set {key}: no such field; top-level fields: "
                              f"{', '.join(sorted(fields))}; sections: {', '.join(_SECTIONS)}")
        cfg = dataclasses.replace(cfg, **{key: parse_value(value, getattr(cfg, key), f"--set {key}")})
    return cfg


def validate(cfg: TrainConfig, n_devices: int | None = None) -> None:
    """Raises ConfigError for a config that makes no sense, before anything is written."""
    def positive(where: str, value, allow_zero=False):
        ok = value >= 0 if allow_zero else value > 0
        if not ok:
            raise ConfigError(f"{where} must be {'>= 0' if allow_zero else '> 0'}, got {value!r}")

    positive("steps", cfg.steps)
    positive("eval_every", cfg.eval_every, allow_zero=True)
    positive("checkpoint_every", cfg.checkpoint_every, allow_zero=True)
    positive("keep_checkpoints", cfg.keep_checkpoints)
    positive("log_every", cfg.log_every)
    positive("peak_flops", cfg.peak_flops, allow_zero=True)
    d, o = cfg.data, cfg.optim
    positive("data.batch_size", d.batch_size)
    positive("data.grad_accum", d.grad_accum)
    positive("data.seq_len", d.seq_len, allow_zero=True)
    positive("data.eval_batches", d.eval_batches, allow_zero=True)
    if d.batch_size % d.grad_accum:
        raise ConfigError(f"data.batch_size={d.batch_size} must be divisible by "
                          f"data.grad_accum={d.grad_accum} (each microbatch has the same size)")
    if cfg.seq_len > cfg.model.max_seq_len:
        raise ConfigError(f"data.seq_len={cfg.seq_len} exceeds the model's context "
                          f"model.max_seq_len={cfg.model.max_seq_len}")
    if not o.lr > 0 or o.lr != o.lr:
        raise ConfigError(f"optim.lr must be > 0, got {o.lr!r}")
    if o.schedule not in SCHEDULES:
        raise ConfigError(f"optim.schedule must be one of {SCHEDULES}, got {o.schedule!r}")
    positive("optim.warmup_steps", o.warmup_steps, allow_zero=True)
    if o.warmup_steps >= cfg.steps and o.schedule != "constant":
        raise ConfigError(f"optim.warmup_steps={o.warmup_steps} must be < steps={cfg.steps}")
    for name in ("min_lr_ratio", "weight_decay", "clip_norm"):
        positive(f"optim.{name}", getattr(o, name), allow_zero=True)
    if o.min_lr_ratio > 1:
        raise ConfigError(f"optim.min_lr_ratio must be in [0, 1], got {o.min_lr_ratio}")
    if not 0 < o.decay_fraction <= 1:
        raise ConfigError(f"optim.decay_fraction must be in (0, 1], got {o.decay_fraction}")
    for name in ("b1", "b2"):
        if not 0 <= getattr(o, name) < 1:
            raise ConfigError(f"optim.{name} must be in [0, 1), got {getattr(o, name)}")
    if n_devices is not None:
        m = cfg.mesh
        fixed = m.fsdp * m.tensor * (1 if m.data == -1 else m.data)
        if m.data == 0 or m.fsdp <= 0 or m.tensor <= 0 or n_devices % fixed:
            raise ConfigError(f"mesh data={m.data} fsdp={m.fsdp} tensor={m.tensor} does not fit "
                              f"{n_devices} devices")
        data_ways = (n_devices // fixed if m.data == -1 else m.data) * m.fsdp
        micro = d.batch_size // d.grad_accum
        if micro % data_ways:
            raise ConfigError(
                f"microbatch of {micro} sequences (data.batch_size/data.grad_accum) must divide "
                f"evenly over the {data_ways} data-parallel devices")


def save(cfg: TrainConfig, path: str | os.PathLike) -> None:
    """Writes the resolved config as JSON atomically (temp name, then rename)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(cfg.to_dict(), indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)
