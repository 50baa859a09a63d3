"""The run directory: what a rerun continues, what it refuses, and what it never touches."""

import dataclasses
import json
import shutil
import subprocess

import pytest

from model.config import ConfigError
from tests.train_helpers import (REPO, cli_env, config_dict, losses, prepare_small_demo,
                                 pretrain_cmd, write_config)
from train import config as train_config
from train import pretrain, run_dir


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return prepare_small_demo(tmp_path_factory.mktemp("data"))


def tiny(data_dir, **changes):
    d = config_dict(data_dir, steps=8, eval_every=0, checkpoint_every=4, log_every=1,
                    optim__warmup_steps=2)
    for k, v in changes.items():
        d[k] = v
    return train_config.from_dict(d)


@pytest.fixture(scope="module")
def finished(data_dir, tmp_path_factory):
    """A finished 8-step run, copied by each test that changes it."""
    out = tmp_path_factory.mktemp("finished") / "run"
    pretrain.run(tiny(data_dir), out, progress=False)
    return out


def snapshot(folder):
    return sorted((str(p.relative_to(folder)), p.stat().st_mtime_ns) for p in folder.rglob("*"))


def test_rerun_of_finished_run_leaves_summary_and_files_alone(finished, data_dir):
    before = snapshot(finished)
    summary = json.loads((finished / "summary.json").read_text())
    again = pretrain.run(tiny(data_dir), finished, progress=False)
    assert again == summary  # wall_s included: the first run's, not the rerun's
    assert snapshot(finished) == before


def test_raising_steps_continues_a_finished_run(finished, data_dir, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    first = losses(out)
    wall_first = json.loads((out / "summary.json").read_text())["wall_s"]
    summary = pretrain.run(tiny(data_dir, steps=12), out, progress=False)
    after = losses(out)
    assert sorted(after) == list(range(1, 13))
    assert {s: after[s] for s in first} == first  # the first 8 steps are kept, not retrained
    assert summary["step"] == 12 and summary["wall_s"] > wall_first
    assert json.loads((out / "config.json").read_text())["steps"] == 12
    assert 12 in [int(p.name) for p in (out / "checkpoints").iterdir() if p.name.isdigit()]


def test_set_steps_on_the_command_line_continues_a_finished_run(finished, data_dir):
    """`--set steps=N` alone also scales the warmup (train.config): still the same run."""
    cfg = train_config.apply_overrides(tiny(data_dir), ["steps=16"])
    assert cfg.optim.warmup_steps == 4  # 2 of 8 steps became 4 of 16
    plan = run_dir.plan(finished, cfg)
    assert plan.start_step == 8 and not plan.clear
    assert sorted(d.split(":")[0] for d in plan.extended) == ["optim.warmup_steps", "steps"]


def test_a_run_saved_before_a_config_field_existed_is_still_this_run(finished, tmp_path,
                                                                      data_dir):
    """A field added to the code since (its default is the old behaviour) does not make an old
    run "a different config"; a saved value other than the default still does."""
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    saved = json.loads((out / "config.json").read_text())
    del saved["sft"]["epochs"], saved["rl"]
    (out / "config.json").write_text(json.dumps(saved))
    plan = run_dir.plan(out, tiny(data_dir))
    assert plan.start_step == 8 and not plan.clear and plan.summary is not None
    saved["sft"]["epochs"] = 7
    (out / "config.json").write_text(json.dumps(saved))
    with pytest.raises(ConfigError, match=r"sft.epochs: 7 -> 3"):
        run_dir.plan(out, tiny(data_dir))


def test_lowering_steps_is_a_different_run(finished, data_dir):
    with pytest.raises(ConfigError, match=r"steps: 8 -> 4 \(a run can be continued, not "
                                          r"shortened\)"):
        run_dir.plan(finished, tiny(data_dir, steps=4))


def test_resume_with_data_of_another_tokenizer_is_refused(finished, data_dir, tmp_path):
    # The run's data path now holds data prepared with another tokenizer (trained on fewer
    # plays), as when a user prepares a folder again.
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    data = tmp_path / "data"
    shutil.copytree(prepare_small_demo(tmp_path / "other", max_docs=3), data)
    train_config.save(with_source(tiny(data_dir), data), out / "config.json")
    tokenizer_before = (out / "tokenizer.json").read_bytes()
    before = snapshot(out)
    with pytest.raises(ConfigError, match=r"uses tokenizer \w+, but the run in .* was trained "
                                          r"with tokenizer \w+ .*another --out"):
        pretrain.run(with_source(tiny(data_dir, steps=12), data), out, progress=False)
    assert (out / "tokenizer.json").read_bytes() == tokenizer_before
    assert snapshot(out) == before


def with_source(cfg, source):
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, source=str(source)))


def test_out_pointing_at_a_file_is_one_line_error(data_dir, tmp_path):
    target = tmp_path / "notes.txt"
    target.write_text("mine\n")
    config = write_config(tmp_path / "tiny.json", config_dict(data_dir))
    hint = "is a file, not a directory; give a directory for the run (it is created when missing)"
    for out, named in ((target, f"--out {target}"),
                       (target / "run", f"--out {target / 'run'}: its parent {target}")):
        proc = subprocess.run(pretrain_cmd(config, out), env=cli_env(1), cwd=REPO,
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2, proc.stderr[-2000:]
        assert proc.stderr.strip().splitlines() == [f"error: {named} {hint}"]
    assert target.read_text() == "mine\n"


def test_foreign_files_are_refused_even_with_force(finished, data_dir, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    (out / "my-notes.md").write_text("keep me\n")
    changed = tiny(data_dir, seed=1)
    for force in (False, True):
        with pytest.raises(ConfigError, match=r"not a twofiles run \(my-notes\.md\).*never "
                                              r"deleted, --force included"):
            run_dir.plan(out, changed, force=force)
    assert (out / "my-notes.md").read_text() == "keep me\n"


def test_force_replaces_only_a_run_of_another_config(finished, data_dir, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    changed = tiny(data_dir, seed=1, steps=4)
    with pytest.raises(ConfigError, match=r"different config \(seed: 0 -> 1.*--force"):
        run_dir.plan(out, changed)
    summary = pretrain.run(changed, out, force=True, progress=False)
    assert summary["step"] == 4 and sorted(losses(out)) == [1, 2, 3, 4]
    assert json.loads((out / "config.json").read_text())["seed"] == 1
