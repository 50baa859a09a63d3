"""The presets `python -m model` lists are the models a user trains by those names."""

import json
from pathlib import Path

import model
from infer.formats.tokenizer_file import MIN_VOCAB_SIZE
from model.__main__ import main as model_cli

CONFIGS = Path(__file__).resolve().parent.parent / "train" / "configs"


def test_demo_preset_is_the_demo_training_config():
    section = json.loads((CONFIGS / "demo.json").read_text())["model"]
    assert section["preset"] == "demo"
    demo = model.preset("demo").to_dict()
    for field, value in section.items():
        if field != "preset" and value != "auto":  # "auto": a dtype train.host picks per CPU
            assert demo[field] == value, field


def test_tiny_preset_vocabulary_fits_a_trained_tokenizer():
    assert model.preset("tiny").vocab_size >= MIN_VOCAB_SIZE


def test_table_shows_the_demo_models_size(capsys):
    section = json.loads((CONFIGS / "demo.json").read_text())["model"]
    overrides = [f"{k}={str(v).lower()}" for k, v in section.items()
                 if k != "preset" and v != "auto"]
    trained = model.count_params(model.apply_overrides(model.preset("demo"), overrides))
    assert model_cli([]) == 0
    demo_row = next(line for line in capsys.readouterr().out.splitlines()
                    if line.startswith("demo "))
    assert f"{trained['params']:,}" in demo_row
