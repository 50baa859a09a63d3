"""A chat starts with the model's recommended sampling settings: the file's own (GGUF
general.sampling.*, generation_config.json), else the model card's by family, else the generic
default; flags the user gives always win."""

import argparse
import json
import types

import pytest

import infer
from infer.cli import args as cli_args
from infer.formats.export import export
from infer.runtime import sampling_defaults
from tests.test_export_common import tiny_twofiles_model


def _model(**metadata):
    return types.SimpleNamespace(metadata=metadata)


def test_gguf_sampling_keys_win_over_the_family_table():
    m = _model(**{"general.basename": "smollm2", "general.sampling.temp": 0.6,
                  "general.sampling.top_p": 0.95, "general.sampling.top_k": 40})
    got = sampling_defaults.for_model(m)
    assert (got.temperature, got.top_p, got.top_k) == (0.6, 0.95, 40)
    assert "general.sampling" in got.source


def test_smollm2_without_keys_gets_its_model_cards_settings():
    got = sampling_defaults.for_model(_model(**{"general.basename": "smollm2"}))
    assert (got.temperature, got.top_p, got.top_k) == (0.2, 0.9, 0)
    assert "model card" in got.source


def test_an_unknown_model_gets_the_generic_default():
    got = sampling_defaults.for_model(_model(**{"general.name": "mystery"}))
    assert got == sampling_defaults.GENERIC and got.top_p < 1


def test_generation_config_json_is_read(tmp_path):
    out = tmp_path / "hf"
    export(tiny_twofiles_model(), "safetensors", out)
    assert sampling_defaults.for_model(infer.load(out)) == sampling_defaults.GENERIC  # ids only
    gen = json.loads((out / "generation_config.json").read_text())
    gen.update(do_sample=True, temperature=0.3, top_p=0.8)
    (out / "generation_config.json").write_text(json.dumps(gen))
    got = sampling_defaults.for_model(infer.load(out))
    # transformers samples with top_k=50 when do_sample is set and top_k is not given
    assert (got.temperature, got.top_p, got.top_k) == (0.3, 0.8, 50)
    assert got.source == "generation_config.json"
    gen["do_sample"] = False
    (out / "generation_config.json").write_text(json.dumps(gen))
    assert sampling_defaults.for_model(infer.load(out)).temperature == 0.0


def _args(**given):
    values = dict(temperature=None, top_k=None, top_p=None, seed=3, max_new_tokens=8,
                  stop=[], weights="float32")
    return argparse.Namespace(**{**values, **given})


def test_flags_win_and_the_source_says_so():
    smol = _model(**{"general.basename": "smollm2"})
    sampling, source = cli_args.sampling_kwargs(_args(temperature=1.0), smol, chat=True)
    assert (sampling["temperature"], sampling["top_p"], sampling["seed"]) == (1.0, 0.9, 3)
    assert source.startswith("--temperature as given; the rest from SmolLM2's model card")
    plain, source = cli_args.sampling_kwargs(_args(), smol, chat=False)
    assert (plain["temperature"], plain["top_p"], plain["top_k"]) == (0.0, 1.0, 0)
    line = cli_args.describe_sampling(sampling, "x")
    assert line == "temperature 1, top-p 0.9, top-k off, seed 3 (x)"


def test_bad_values_in_a_file_fall_back_instead_of_failing():
    got = sampling_defaults.for_model(_model(**{"general.basename": "smollm2",
                                                "general.sampling.top_p": 7.0}))
    assert got.source.startswith("SmolLM2's model card")


@pytest.mark.parametrize("flag", ["--temperature=-1", "--top-p=0"])
def test_bad_flags_are_refused(flag, capsys):
    name, value = flag[2:].split("=")
    with pytest.raises(SystemExit):
        cli_args.check_sampling_flags(_args(**{name.replace("-", "_"): float(value)}))
    assert name.replace("-", "_") in capsys.readouterr().err


def test_exports_carry_the_recommendation(tmp_path):
    import dataclasses

    m = dataclasses.replace(tiny_twofiles_model(), metadata={"general.basename": "smollm2"})
    export(m, "gguf", tmp_path / "m.gguf", dtype="f32")
    export(m, "safetensors", tmp_path / "hf")
    for source, where in ((tmp_path / "m.gguf", "general.sampling"),
                          (tmp_path / "hf", "generation_config.json")):
        got = sampling_defaults.for_model(infer.load(source))
        assert (got.temperature, got.top_p, got.top_k) == pytest.approx((0.2, 0.9, 0))
        assert where in got.source
