"""The model's configuration: one frozen dataclass, validated on construction."""

from __future__ import annotations

import dataclasses
import math
import typing
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
    """Parses a command-line value into the type `like` (a type, or a value of that type).

    Strict, so a typo never becomes a different number: an integer field takes only integer
    digits ("2.5e0" is refused, not truncated to 2; "1e3" is refused with a hint to write 1000);
    a float field takes only finite numbers (no inf or nan)."""
    kind = like if isinstance(like, type) else type(like)
    text = text.strip()
    if issubclass(kind, bool):
        lowered = text.lower()
        if lowered in ("true", "1", "yes", "on"):
            return True
        if lowered in ("false", "0", "no", "off"):
            return False
        raise ConfigError(f"{where} expects true or false, got {text!r}")
    if issubclass(kind, int):
        try:
            return int(text)
        except ValueError:
            pass
        try:
            as_float = float(text)
        except ValueError:
            raise ConfigError(f"{where} expects an integer, got {text!r}") from None
        hint = (f"; write {int(as_float)}" if math.isfinite(as_float) and as_float.is_integer()
                else "")
        raise ConfigError(f"{where} expects an integer, got {text!r}{hint}")
    if issubclass(kind, float):
        try:
            value = float(text)
        except ValueError:
            raise ConfigError(f"{where} expects a number, got {text!r}") from None
        if not math.isfinite(value):
            raise ConfigError(f"{where} expects a finite number, got {text!r}")
        return value
    return text


def split_override(item: str) -> tuple[str, str]:
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {item!r} is not of the form field=value")
    return key.strip(), value.strip()


def apply_overrides(config: ModelConfig, overrides: Iterable[str], prefix: str = ""
                    ) -> ModelConfig:
    """Returns `config` with `field=value` overrides applied (as given to `--set`); errors
    name a field as `--set {prefix}{field}` (the training config's prefix is "model.")."""
    kinds = typing.get_type_hints(type(config))  # the declared types, whatever a value holds
    changes = {}
    for item in overrides:
        key, value = split_override(item)
        if key not in kinds:
            raise ConfigError(f"--set {prefix}{key}: ModelConfig has no field {key!r}; "
                              f"fields: {', '.join(sorted(kinds))}")
        changes[key] = parse_value(value, kinds[key], f"--set {prefix}{key}")
    return dataclasses.replace(config, **changes)
