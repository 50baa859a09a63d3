"""twofiles' transformer: a config, pure functions over a parameter tree, and its accounting.

    cfg = model.preset("tiny")
    params = model.init(cfg, jax.random.key(0))
    logits_BTV, _ = model.forward(params, tokens_BT, cfg)

`model` imports no other package of the project.
"""

from model.accounting import count_params, flops_per_token, forward_flops_per_token
from model.config import ConfigError, ModelConfig, apply_overrides
from model.params import ParamSpec, init, param_axes, param_specs
from model.presets import names as preset_names, preset
from model.transformer import forward, init_cache

__all__ = [
    "ConfigError", "ModelConfig", "ParamSpec", "apply_overrides", "count_params", "flops_per_token",
    "forward", "forward_flops_per_token", "init", "init_cache", "param_axes", "param_specs",
    "preset", "preset_names",
]
