"""The config refuses shapes that cannot work and names the field; presets and CLI agree."""

import json

import pytest

import model
from model.__main__ import main as model_cli

# Published parameter counts: Llama 2 paper / released checkpoints, SmolLM2-135M model card.
PUBLISHED = {
    "llama2-7b": 6_738_415_616,
    "llama2-13b": 13_015_864_320,
    "llama2-70b": 68_976_648_192,
    "smollm2-135m": 134_515_008,
}


@pytest.mark.parametrize("name,expected", PUBLISHED.items())
def test_counts_equal_published(name, expected):
    assert model.count_params(model.preset(name))["params"] == expected


@pytest.mark.parametrize("name", model.preset_names())
def test_count_equals_size_of_the_tree_init_builds(name):
    import jax
    import numpy as np

    cfg = model.preset(name)
    shapes = jax.eval_shape(lambda k: model.init(cfg, k), jax.random.key(0))
    size = sum(int(np.prod(s.shape)) for s in jax.tree.leaves(shapes))
    assert model.count_params(cfg)["params"] == size


def test_non_embedding_excludes_both_vocabulary_matrices():
    tied = model.preset("tiny")
    untied = model.apply_overrides(tied, ["tie_embeddings=false"])
    V, D = tied.vocab_size, tied.d_model
    assert model.count_params(untied)["params"] - model.count_params(tied)["params"] == V * D
    assert (model.count_params(untied)["non_embedding_params"]
            == model.count_params(tied)["non_embedding_params"])


@pytest.mark.parametrize("change,field", [
    (dict(n_heads=5), "n_heads"),
    (dict(n_kv_heads=3), "n_kv_heads"),
    (dict(d_model=0), "d_model"),
    (dict(compute_dtype="float8"), "compute_dtype"),
    (dict(d_model=60, n_heads=4, n_kv_heads=4), "head_dim"),
])
def test_bad_config_names_the_field(change, field):
    import dataclasses

    with pytest.raises(model.ConfigError, match=field):
        dataclasses.replace(model.preset("tiny"), **change)


def test_overrides_parse_types_and_reject_unknown_fields():
    cfg = model.apply_overrides(model.preset("tiny"),
                                ["n_layers=3", "rope_theta=5e5", "tie_embeddings=false"])
    assert (cfg.n_layers, cfg.rope_theta, cfg.tie_embeddings) == (3, 500000.0, False)
    with pytest.raises(model.ConfigError, match="n_layer"):
        model.apply_overrides(cfg, ["n_layer=3"])
    with pytest.raises(model.ConfigError, match="n_layers"):
        model.apply_overrides(cfg, ["n_layers=three"])


def test_cli_json_reports_counts_without_allocating(capsys):
    assert model_cli(["--preset", "llama2-70b", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"config", "params", "non_embedding_params", "flops_per_token"}
    assert out["params"] == PUBLISHED["llama2-70b"]
    assert out["config"]["n_kv_heads"] == 8


def test_cli_set_and_bad_input(capsys):
    assert model_cli(["--preset", "tiny", "--set", "n_layers=4", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["config"]["n_layers"] == 4
    assert model_cli(["--preset", "tiny", "--set", "n_heads=3"]) == 2
    assert "n_heads" in capsys.readouterr().err
