"""The training config is type-checked field by field, from JSON and from `--set`, and refused
with one line naming the field, the value and the type expected, before anything is written;
shortening a run keeps its warmup the same fraction of it."""

import json

import pytest

import model
from model.config import ConfigError
from train import __main__ as train_cli
from train import config as train_config
from train.optim import schedule


@pytest.mark.parametrize("d, message", [
    ({"steps": 1e3}, r"steps must be an integer, got 1000\.0; write 1000"),
    ({"steps": 20.5}, r"steps must be an integer, got 20\.5$"),
    ({"steps": True}, r"steps must be an integer, got True"),
    ({"data": {"batch_size": 8.0}}, r"data\.batch_size must be an integer, got 8\.0; write 8"),
    ({"optim": {"lr": "3e-3"}}, r"optim\.lr must be a finite number, got the string '3e-3' "
                                r"\(write the number without quotes\)"),
    ({"optim": {"lr": float("inf")}}, r"optim\.lr must be a finite number, got inf"),
    ({"async_checkpointing": 1}, r"async_checkpointing must be true or false, got 1"),
    ({"data": {"source": 3}}, r"data\.source must be a string, got 3"),
    ({"model": {"preset": "tiny", "rope_theta": "1e4"}}, r"model\.rope_theta must be a finite"),
    ({"model": {"preset": "tiny", "n_layers": 2.0}}, r"model\.n_layers must be an integer"),
    ({"model": 5}, r"model must be an object of ModelConfig fields"),
    ({"data": "demo"}, r"data must be an object of DataConfig fields.*the string 'demo'"),
    ({"optim": {"learning_rate": 1}}, r"unknown optim field\(s\) \['learning_rate'\]"),
])
def test_json_values_of_the_wrong_type_are_refused_naming_the_field(d, message):
    with pytest.raises(ConfigError, match=r"^cfg\.json: " + message):
        train_config.from_dict(d, where="cfg.json")


def test_a_model_section_may_be_a_preset_name():
    cfg = train_config.from_dict({"model": "tiny"})
    assert cfg.model == model.preset("tiny")


def test_an_integer_where_a_float_is_declared_becomes_that_float():
    cfg = train_config.from_dict({"optim": {"lr": 1}, "model": {"preset": "tiny",
                                                                "rope_theta": 10000}})
    assert type(cfg.optim.lr) is float and type(cfg.model.rope_theta) is float
    # So a later --set parses by the declared type, not by the int the JSON happened to hold.
    cfg = train_config.apply_overrides(cfg, ["optim.lr=0.5", "model.rope_theta=5e5"])
    assert (cfg.optim.lr, cfg.model.rope_theta) == (0.5, 500000.0)


def test_dataclasses_built_in_code_are_checked_too():
    with pytest.raises(ConfigError, match=r"^steps must be an integer, got 1000\.0; write 1000"):
        train_config.TrainConfig(steps=1e3)
    with pytest.raises(ConfigError, match=r"^optim\.lr must be a finite number, got nan"):
        train_config.OptimConfig(lr=float("nan"))
    with pytest.raises(ConfigError, match=r"^data must be a DataConfig"):
        train_config.TrainConfig(data={"batch_size": 8})


def test_the_defaults_are_a_valid_config():
    train_config.validate(train_config.TrainConfig())


@pytest.mark.parametrize("item, message", [
    ("steps=2.5e0", r"--set steps expects an integer, got '2\.5e0'$"),
    ("steps=1e3", r"--set steps expects an integer, got '1e3'; write 1000"),
    ("data.batch_size=8.0", r"--set data\.batch_size expects an integer, got '8\.0'; write 8"),
    ("model.n_layers=2.5", r"--set model\.n_layers expects an integer, got '2\.5'"),
    ("optim.lr=inf", r"--set optim\.lr expects a finite number, got 'inf'"),
    ("optim.lr=nan", r"--set optim\.lr expects a finite number, got 'nan'"),
    ("model.rope_theta=-inf", r"--set model\.rope_theta expects a finite number"),
    ("optim.lr=fast", r"--set optim\.lr expects a number, got 'fast'"),
    ("async_checkpointing=maybe", r"--set async_checkpointing expects true or false"),
])
def test_set_values_are_parsed_strictly(item, message):
    with pytest.raises(ConfigError, match=message):
        train_config.apply_overrides(train_config.load("tiny"), [item])


def test_set_parses_exact_values():
    cfg = train_config.apply_overrides(train_config.load("tiny"), [
        "steps=12", "optim.lr=2e-3", "optim.b2=0.99", "seed=-1", "async_checkpointing=false"])
    assert (cfg.steps, cfg.optim.lr, cfg.optim.b2, cfg.seed, cfg.async_checkpointing) == (
        12, 2e-3, 0.99, -1, False)


def test_cli_refuses_a_badly_typed_config_before_writing(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"model": "tiny", "steps": 20.5}))
    out = tmp_path / "run"
    assert train_cli.main(["pretrain", "--config", str(bad), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "steps must be an integer, got 20.5" in err and "Traceback" not in err
    assert train_cli.main(["pretrain", "--config", "tiny", "--out", str(out),
                           "--set", "optim.lr=inf"]) == 2
    assert "--set optim.lr expects a finite number, got 'inf'" in capsys.readouterr().err
    assert not out.exists()


def test_shortening_the_demo_run_keeps_its_warmup_fraction():
    demo = train_config.load("demo")
    assert (demo.steps, demo.optim.warmup_steps) == (16000, 224)  # what make demo trains
    short = train_config.apply_overrides(demo, ["steps=50"])
    train_config.validate(short)
    assert short.optim.warmup_steps == 1  # 224/16000 of 50 steps (0.7), rounded
    assert train_config.apply_overrides(demo, ["steps=600"]).optim.warmup_steps == 8  # 8.4
    assert train_config.apply_overrides(demo, ["steps=16000"]) == demo  # its own count: unchanged
    tiny = train_config.load("tiny")  # 5 of 30
    assert train_config.apply_overrides(tiny, ["steps=2"]).optim.warmup_steps == 0
    assert train_config.apply_overrides(tiny, ["steps=6"]).optim.warmup_steps == 1
    # The schedule at the demo's own count is the one it always had.
    lr = schedule(demo.optim, demo.steps)
    assert float(lr(224)) == pytest.approx(demo.optim.lr)
    assert float(lr(112)) == pytest.approx(demo.optim.lr / 2)


def test_a_warmup_given_with_steps_is_kept_and_a_bad_one_says_what_to_set():
    demo = train_config.load("demo")
    cfg = train_config.apply_overrides(demo, ["steps=50", "optim.warmup_steps=20"])
    assert cfg.optim.warmup_steps == 20
    bad = train_config.apply_overrides(demo, ["optim.warmup_steps=50", "steps=50"])
    with pytest.raises(ConfigError, match=r"optim\.warmup_steps=50 must be < steps=50.*"
                                          r"set e\.g\. optim\.warmup_steps=5"):
        train_config.validate(bad)
