"""The model's configuration: one frozen dataclass, validated on construction."""

from __future__ import annotations

import dataclasses
from typing import Any, Iterable

DTYPES = ("float32", "bfloat16", "float16")


class ConfigError(ValueError):
    """A configuration value is wrong; the message names the field and what was expected."""


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Shape and numerics of a Llama-family decoder.

    The defaults are the tiny CPU model used by the tests.
    """

    vocab_size: int = 256
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 4
    n_kv_heads: int = 2
    d_ff: int = 192
    max_seq_len: int = 128
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    tie_embeddings: bool = True
    # Matmul inputs are cast to compute_dtype and accumulate in float32; the residual stream,
    # norms, softmax, logits and loss stay float32.
    compute_dtype: str = "float32"
    param_dtype: str = "float32"
    # Recompute each block's activations in the backward pass instead of storing them.
    remat: bool = False
    # Run the layers as one lax.scan (one compilation whatever the depth: what a pod wants) or,
    # without a KV cache, as a Python loop, which skips the scan's stacked activation buffers
    # (~5% of the bench step on XLA:CPU) at the price of compile time growing with depth.
    scan_layers: bool = True

    def __post_init__(self):
        for name in ("vocab_size", "d_model", "n_layers", "n_heads", "n_kv_heads", "d_ff",
                     "max_seq_len"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"ModelConfig.{name} must be a positive integer, got {value!r}")
        if self.d_model % self.n_heads:
            raise ConfigError(
                f"ModelConfig.n_heads={self.n_heads} must divide d_model={self.d_model}")
        if self.n_heads % self.n_kv_heads:
            raise ConfigError(
                f"ModelConfig.n_kv_heads={self.n_kv_heads} must divide n_heads={self.n_heads} "
                "(grouped-query attention shares each kv head among n_heads/n_kv_heads queries)")
        if self.head_dim % 2:
            raise ConfigError(
                f"ModelConfig: head_dim = d_model/n_heads = {self.head_dim} must be even for "
                "rotary embeddings")
        for name in ("rope_theta", "norm_eps"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"ModelConfig.{name} must be > 0, got {getattr(self, name)!r}")
        for name in ("compute_dtype", "param_dtype"):
            if getattr(self, name) not in DTYPES:
                raise ConfigError(
                    f"ModelConfig.{name} must be one of {DTYPES}, got {getattr(self, name)!r}")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown ModelConfig field(s) {unknown}; known: {sorted(known)}")
        return cls(**d)


def parse_value(text: str, like: Any, where: str) -> Any:
    """Parses a command-line value into the type of `like` (the field's current value)."""
    if isinstance(like, bool):
        lowered = text.strip().lower()
        if lowered in ("true", "1", "yes", "on"):
            return True
        if lowered in ("false", "0", "no", "off"):
            return False
        raise ConfigError(f"{where} expects true or false, got {text!r}")
    for kind in (int, float):
        if isinstance(like, kind):
            try:
                return kind(float(text)) if kind is int and "e" in text.lower() else kind(text)
            except ValueError:
                raise ConfigError(f"{where} expects {kind.__name__}, got {text!r}") from None
    return text


def split_override(item: str) -> tuple[str, str]:
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {item!r} is not of the form field=value")
    return key.strip(), value.strip()


def apply_overrides(config: ModelConfig, overrides: Iterable[str]) -> ModelConfig:
    """Returns `config` with `field=value` overrides applied (as given to `--set`)."""
    fields = {f.name for f in dataclasses.fields(config)}
    changes = {}
    for item in overrides:
        key, value = split_override(item)
        if key not in fields:
            raise ConfigError(f"--set {key}: ModelConfig has no field {key!r}; "
                              f"fields: {', '.join(sorted(fields))}")
        changes[key] = parse_value(value, getattr(config, key), f"--set {key}")
    return dataclasses.replace(config, **changes)
