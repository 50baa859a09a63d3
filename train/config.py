"""The training configuration: frozen dataclasses, named presets (JSON files) and `--set` overrides.

A config is resolved once (named preset -> overrides -> validation) and saved with the run as
`OUT/config.json`; a rerun compares against it to decide between resuming and refusing.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import typing
from pathlib import Path
from typing import Any, Iterable

import model
from model.config import ConfigError, parse_value, split_override
from train import host

CONFIG_DIR = Path(__file__).parent / "configs"
SCHEDULES = ("cosine", "wsd", "constant")
_EXPECTED = {bool: "true or false", int: "an integer", float: "a finite number", str: "a string"}


def _described(value) -> str:
    if isinstance(value, str):
        return f"the string {value!r}" + (" (write the number without quotes)"
                                          if _is_number(value) else "")
    return repr(value)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def checked(value, kind: type, where: str):
    """`value` as the declared `kind` (an int where a float is declared becomes that float);
    raises ConfigError naming `where`, the value and the type expected. Booleans are not
    integers, and an integer-valued float is not an integer either (it says what to write)."""
    if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        if math.isfinite(value):
            return float(value)
    elif kind is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    elif kind in (bool, str) and isinstance(value, kind):
        return value
    hint = ""
    if kind is int and isinstance(value, float) and value.is_integer():
        hint = f"; write {int(value)}"
    raise ConfigError(f"{where} must be {_EXPECTED[kind]}, got {_described(value)}{hint}")


def _check_fields(obj, prefix: str) -> None:
    """Type-checks a config dataclass's scalar fields in place (frozen: object.__setattr__)."""
    for name, kind in typing.get_type_hints(type(obj)).items():
        if kind in _EXPECTED:
            object.__setattr__(obj, name, checked(getattr(obj, name), kind, prefix + name))


@dataclasses.dataclass(frozen=True)
class DataConfig:
    # A prepared directory (from `python -m train prepare`: used as it is, with its tokenizer),
    # or a source train.prepare understands ("demo", a text/jsonl/parquet file or folder,
    # "tfds:NAME"), prepared on first use into the cache and reused while its files are unchanged.
    source: str = "demo"
    cache_dir: str = ""  # "": $TWOFILES_CACHE/data, by default ~/.cache/twofiles/data
    batch_size: int = 16  # global sequences per optimizer step
    grad_accum: int = 1  # microbatches per optimizer step; batch_size must divide evenly
    seq_len: int = 0  # 0 means the model's context, model.max_seq_len
    eval_batches: int = 8  # validation batches (of batch_size sequences) per evaluation

    def __post_init__(self):
        _check_fields(self, "data.")


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    lr: float = 3e-3  # peak learning rate
    schedule: str = "cosine"  # cosine | wsd (warmup-stable-decay) | constant (after warmup)
    warmup_steps: int = 10  # linear from 0; overriding steps alone scales it (apply_overrides)
    min_lr_ratio: float = 0.1  # final lr = lr * min_lr_ratio
    decay_fraction: float = 0.2  # wsd: the last fraction of steps decays linearly
    weight_decay: float = 0.1  # decoupled (AdamW)
    decay_norms_and_embeddings: bool = False  # weight decay on norm gains and the embedding too
    b1: float = 0.9
    b2: float = 0.95
    eps: float = 1e-8
    clip_norm: float = 1.0  # global gradient norm; 0 disables clipping

    def __post_init__(self):
        _check_fields(self, "optim.")


@dataclasses.dataclass(frozen=True)
class MeshConfig:
    data: int = -1  # -1: all devices not used by the other axes
    fsdp: int = 1
    tensor: int = 1

    def __post_init__(self):
        _check_fields(self, "mesh.")


@dataclasses.dataclass(frozen=True)
class SFTConfig:
    """Supervised fine-tuning's inputs (train.sft); unused by pretraining."""
    base: str = ""  # anything infer.load reads: a run, a GGUF, a Hugging Face directory, smollm2
    data: str = ""  # conversations, OpenAI-style JSONL
    val: str = ""  # held-out conversations: validation loss on assistant tokens
    epochs: int = 3  # passes over the data when steps is 0
    truncate: bool = False  # cut conversations longer than a row (counted) instead of refusing
    # Task accuracy at each evaluation (train.task_eval): greedy answers to the task's held-out
    # problems (seed 0, what `python -m evals run` scores), logged as task_accuracy.
    eval_task: str = ""  # an evals task: arithmetic, gsm; "": none
    eval_task_options: str = ""  # JSON object of the task's options, e.g. {"digits": [2, 2]}
    eval_problems: int = 64
    eval_max_new_tokens: int = 0  # 0: the task's own budget (64 for arithmetic)

    def __post_init__(self):
        _check_fields(self, "sft.")


@dataclasses.dataclass(frozen=True)
class LoraConfig:
    """Low-rank adapters (model.lora); rank 0 trains every parameter."""
    rank: int = 0
    alpha: float = 16.0  # the adapters' product is scaled by alpha / rank
    targets: str = "wq,wk,wv,wo,w_gate,w_up,w_down"  # comma-separated matrices

    def __post_init__(self):
        _check_fields(self, "lora.")


@dataclasses.dataclass(frozen=True)
class DPOConfig:
    """Direct preference optimisation's inputs and settings (train.dpo)."""
    base: str = ""  # anything infer.load reads; also the reference model
    pairs: str = ""  # preference pairs, JSONL {"prompt", "chosen", "rejected"}
    val: str = ""  # held-out pairs: preference accuracy before and after
    epochs: int = 1  # passes over the pairs when steps is 0
    beta: float = 0.1  # strength of the pull towards the reference (DPO's beta)
    label_smoothing: float = 0.0  # conservative DPO: the chance a label is flipped, < 0.5
    rpo_alpha: float = 0.0  # RPO: weight of the chosen answer's mean token NLL (TRL rpo_alpha)
    reference: str = "precomputed"  # precomputed once before training, or "frozen": a copy

    def __post_init__(self):
        _check_fields(self, "dpo.")


@dataclasses.dataclass(frozen=True)
class RMConfig:
    """Reward-model training's inputs (train.rm)."""
    base: str = ""  # anything infer.load reads; the reward head is added to it
    pairs: str = ""  # preference pairs, JSONL {"prompt", "chosen", "rejected"}
    val: str = ""  # held-out pairs: pair accuracy before and after
    epochs: int = 1  # passes over the pairs when steps is 0
    head_init_std: float = 0.0  # reward head ~ N(0, std^2); 0: zeros (then, at step 0, no
    # gradient reaches the body: it flows to it through the head)

    def __post_init__(self):
        _check_fields(self, "rm.")


@dataclasses.dataclass(frozen=True)
class RLConfig:
    """Reinforcement learning with a task's grader as the reward (train.rl): GRPO-family."""
    base: str = ""  # anything infer.load reads; also the reference for the KL
    task: str = ""  # an evals task: arithmetic, gsm
    task_options: str = ""  # JSON object of the task's options, e.g. {"digits": [2, 2]}
    problems: int = 1000  # training problems drawn from the task (seed rl.problem_seed)
    problem_seed: int = 1  # evaluation uses the task's seed 0; duplicates of it are dropped
    eval_problems: int = 64  # held-out problems for greedy pass@1 at each evaluation; 0: none
    group_size: int = 8  # completions sampled per prompt (G)
    prompts_per_step: int = 4  # prompts per rollout batch (rows: prompts x G)
    max_new_tokens: int = 32
    temperature: float = 1.0  # the sampler's; log-probabilities are taken at the same one
    beta_kl: float = 0.0  # weight of the k3 KL penalty to the reference (always logged)
    eps_clip: float = 0.2  # PPO clip of the importance ratio
    updates_per_batch: int = 1  # optimizer steps on each rollout batch (>1: the clip acts)
    scale_by_std: bool = True  # divide advantages by the group's std (False: Dr. GRPO)

    def __post_init__(self):
        _check_fields(self, "rl.")


@dataclasses.dataclass(frozen=True)
class KernelsConfig:
    """How the step computes its loss, not what: speed and memory, the same model and loss."""

    attention: str = "xla"  # xla: dense mask | flash: infer/kernels/flash_attention (blocks)
    loss_chunk: int = 0  # tokens per chunk of the fused output projection + loss; 0: whole logits
    # xla | bf16: the bf16 step's matmuls in infer/kernels/bf16_gemm (AMX tiles, else
    # AVX512_BF16's dot instructions) where the CPU has either; XLA's elsewhere
    matmul: str = "xla"
    # xla | fused: the MLP activation's backward in one pass (infer/kernels/swiglu) where the
    # CPU has AVX-512 with BF16; XLA's expression elsewhere
    swiglu: str = "xla"

    def __post_init__(self):
        _check_fields(self, "kernels.")
        if self.matmul == "amx":  # its name before the kernel ran without AMX too (run configs)
            object.__setattr__(self, "matmul", "bf16")
        for name, choices in (("attention", ("xla", "flash")), ("matmul", ("xla", "bf16")),
                              ("swiglu", ("xla", "fused"))):
            value = getattr(self, name)
            if value not in choices:
                raise ConfigError(f"kernels.{name} must be {' or '.join(choices)}, got "
                                  f"{value!r}")
        if self.loss_chunk < 0:
            raise ConfigError(f"kernels.loss_chunk must be >= 0 (0: no chunks), got "
                              f"{self.loss_chunk}")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    model: model.ModelConfig = dataclasses.field(default_factory=model.ModelConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    mesh: MeshConfig = dataclasses.field(default_factory=MeshConfig)
    sft: SFTConfig = dataclasses.field(default_factory=SFTConfig)
    lora: LoraConfig = dataclasses.field(default_factory=LoraConfig)
    rl: RLConfig = dataclasses.field(default_factory=RLConfig)
    dpo: DPOConfig = dataclasses.field(default_factory=DPOConfig)
    rm: RMConfig = dataclasses.field(default_factory=RMConfig)
    kernels: KernelsConfig = dataclasses.field(default_factory=KernelsConfig)
    steps: int = 100  # optimizer updates
    eval_every: int = 50  # 0: only at the end
    checkpoint_every: int = 50  # 0: only at the end
    keep_checkpoints: int = 3
    log_every: int = 10
    seed: int = 0
    async_checkpointing: bool = True
    peak_flops: float = 0.0  # per device, for MFU; 0: the stated table in train.metrics

    def __post_init__(self):
        for name, cls in _SECTIONS.items():
            if not isinstance(getattr(self, name), cls):
                raise ConfigError(f"{name} must be a {cls.__name__}, got "
                                  f"{_described(getattr(self, name))}")
        _check_fields(self, "")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def seq_len(self) -> int:
        return self.data.seq_len or self.model.max_seq_len


_SECTIONS = {"model": model.ModelConfig, "data": DataConfig, "optim": OptimConfig,
             "mesh": MeshConfig, "sft": SFTConfig, "lora": LoraConfig,
             "dpo": DPOConfig, "rm": RMConfig, "rl": RLConfig, "kernels": KernelsConfig}


def _fields(cls, d, section: str = "") -> dict:
    """The fields of `section` ("" for the top level) from its JSON value, checked: an object,
    known names, the declared types."""
    label, prefix = (section, section + ".") if section else ("the config", "")
    if not isinstance(d, dict):
        raise ConfigError(f"{label} must be an object of {cls.__name__} fields, e.g. "
                          f'{{"{dataclasses.fields(cls)[0].name}": ...}}, got {_described(d)}')
    kinds = typing.get_type_hints(cls)
    unknown = sorted(set(d) - set(kinds))
    if unknown:
        raise ConfigError(f"unknown {section + ' ' if section else ''}field(s) {unknown}; "
                          f"known: {sorted(kinds)}")
    return {k: checked(v, kinds[k], prefix + k) if kinds[k] in _EXPECTED else v
            for k, v in d.items()}


# model.compute_dtype "auto": bfloat16 where the host has bf16 dots (train.host), else float32;
# resolved when the config is read, so a run's config.json names the dtype it trained in.
AUTO = "auto"


def _is_auto_dtype(model_item: str) -> bool:
    key, _, value = model_item.partition("=")
    return key.strip() == "compute_dtype" and value.strip() == AUTO


def _model(d) -> model.ModelConfig:
    """The model section: a preset name ("demo"), or fields over an optional preset
    ({"preset": "demo", "n_layers": 6} is the demo preset with six layers)."""
    if isinstance(d, str):
        d = {"preset": d}
    if isinstance(d, dict) and "preset" in d:
        d = dict(d)
        name = d.pop("preset")
        if not isinstance(name, str):
            raise ConfigError(f"model.preset must be a preset name, got {_described(name)}; "
                              f"presets: {', '.join(model.preset_names())}")
        d = {**model.preset(name).to_dict(), **d}
    if isinstance(d, dict) and d.get("compute_dtype") == AUTO:
        d = {**d, "compute_dtype": host.auto_compute_dtype()}
    return model.ModelConfig.from_dict(_fields(model.ModelConfig, d, "model"))


def _section(name: str, value):
    if name == "model":
        return _model(value)
    cls = _SECTIONS[name]
    return cls(**_fields(cls, value, name))


def from_dict(d: dict[str, Any], where: str = "config") -> TrainConfig:
    """A TrainConfig from a (possibly partial) dict, as a JSON config holds it. Every field is
    type-checked against its declaration (`"steps": 1e3` is refused, not truncated to an int).
    `model` may name a preset: "demo" is the demo preset, {"preset": "demo", "n_layers": 6}
    the demo preset with six layers."""
    try:
        top = _fields(TrainConfig, d)
        return TrainConfig(**{k: _section(k, v) if k in _SECTIONS else v for k, v in top.items()})
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None


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
    """`cfg` with `a.b=value` overrides applied, e.g. ["steps=10", "model.n_layers=2"].

    Values are parsed strictly by the field's declared type (model.config.parse_value).
    Overriding `steps` without `optim.warmup_steps` keeps the warmup the same fraction of the
    run (rounded, and shorter than the run): the demo's 224 of 16000 steps become 1 of 50.
    """
    overrides = list(overrides)
    keys = [split_override(item)[0] for item in overrides]
    # Model fields change together (n_heads=6 with n_kv_heads=6 may be invalid one at a time).
    model_items = [item[len("model."):] for item in overrides if item.startswith("model.")]
    model_items = [f"compute_dtype={host.auto_compute_dtype()}" if _is_auto_dtype(item) else item
                   for item in model_items]
    new = cfg
    if model_items:
        changed = model.apply_overrides(new.model, model_items, prefix="model.")
        new = dataclasses.replace(new, model=changed)
    for item in overrides:
        key, value = split_override(item)
        head, _, rest = key.partition(".")
        if head == "model" and rest:
            continue
        if head in _SECTIONS and rest:
            section = getattr(new, head)
            kinds = typing.get_type_hints(type(section))
            if rest not in kinds:
                raise ConfigError(f"--set {key}: {head} has no field {rest!r}; "
                                  f"fields: {', '.join(sorted(kinds))}")
            section = dataclasses.replace(
                section, **{rest: parse_value(value, kinds[rest], f"--set {key}")})
            new = dataclasses.replace(new, **{head: section})
            continue
        kinds = {k: v for k, v in typing.get_type_hints(TrainConfig).items()
                 if k not in _SECTIONS}
        if key not in kinds:
            raise ConfigError(f"--set {key}: no such field; top-level fields: "
                              f"{', '.join(sorted(kinds))}; sections: {', '.join(_SECTIONS)}")
        new = dataclasses.replace(new, **{key: parse_value(value, kinds[key], f"--set {key}")})
    if "steps" in keys and "optim.warmup_steps" not in keys:
        new = dataclasses.replace(new, optim=dataclasses.replace(
            new.optim, warmup_steps=scaled_warmup(cfg.optim.warmup_steps, cfg.steps, new.steps)))
    return new


def scaled_warmup(warmup_steps: int, steps: int, new_steps: int) -> int:
    """The warmup of a run of `new_steps` that keeps `warmup_steps / steps` (nanochat's and
    MaxText's warmup is a fraction of the run), rounded, and shorter than the run when the
    original was."""
    if steps <= 0 or new_steps <= 0:
        return warmup_steps  # nonsense steps: validate() names them
    warmup = round(warmup_steps * new_steps / steps)
    return min(warmup, new_steps - 1) if warmup_steps < steps else warmup


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
    if not 0 < o.lr < math.inf:
        raise ConfigError(f"optim.lr must be a finite number > 0, got {o.lr!r}")
    if o.schedule not in SCHEDULES:
        raise ConfigError(f"optim.schedule must be one of {SCHEDULES}, got {o.schedule!r}")
    positive("optim.warmup_steps", o.warmup_steps, allow_zero=True)
    if o.warmup_steps >= cfg.steps and o.schedule != "constant":
        raise ConfigError(
            f"optim.warmup_steps={o.warmup_steps} must be < steps={cfg.steps} (the {o.schedule} "
            f"schedule decays after the warmup); set e.g. optim.warmup_steps="
            f"{max(0, cfg.steps // 10)}, or schedule constant")
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
