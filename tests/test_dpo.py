"""DPO and reward-model drivers (train.dpo, train.rm) on a tiny model: they learn the held-out
preference, refuse bad pairs with their line, resume exactly after SIGKILL, and load as models."""

import json
import sys

import jax
import numpy as np
import pytest

import infer
import model
from infer.formats import run_checkpoint
from model.config import ConfigError
from tests.train_helpers import kill_after_checkpoint_then_rerun
from train import config as train_config
from train import dpo, rm
from train.datasets import conversations, preferences

NAMES = ["Ann", "Bob", "Cy", "Dee", "Eve", "Fay", "Gus", "Hal", "Ivy", "Jo", "Kim", "Lou"]
QUESTIONS = ["who are you?", "what is your name?", "name?", "tell me who you are",
             "hello, who is this?", "introduce yourself", "your name please",
             "who am I talking to?"]
HELD_OUT = ["what should I call you?", "and you are?", "who is there?", "say your name"]


def _pairs(questions, offset):
    """The chosen answer is always "I am Quill."; the rejected one names someone else."""
    user = lambda q: [{"role": "user", "content": q}]  # noqa: E731
    answer = lambda text: {"role": "assistant", "content": text}  # noqa: E731
    return [(user(q), answer("I am Quill."), answer(f"I am {NAMES[(i + offset) % len(NAMES)]}."))
            for i, q in enumerate(questions)]


TRAIN = _pairs(QUESTIONS * 2, 0)
VAL = _pairs(HELD_OUT * 2, 5)
SETTINGS = {"data": {"batch_size": 8}, "steps": 16, "eval_every": 8, "checkpoint_every": 4,
            "log_every": 1, "optim": {"lr": 3e-3, "warmup_steps": 0, "weight_decay": 0.0}}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A tiny twofiles base (random weights, exported as the two files) and pair files."""
    from tests.test_export_common import CORPUS
    from tests.train_helpers import export_tiny_base

    root = tmp_path_factory.mktemp("dpo")
    export_tiny_base(root, CORPUS * 4 + [json.dumps(TRAIN + VAL)] * 4)
    preferences.write(root / "train.jsonl", TRAIN)
    preferences.write(root / "val.jsonl", VAL)
    return root


def config(files, section="dpo", **sets):
    d = json.loads(json.dumps(SETTINGS))
    d[section] = {"base": str(files / "base"), "pairs": str(files / "train.jsonl"),
                  "val": str(files / "val.jsonl")}
    return train_config.apply_overrides(train_config.from_dict(d),
                                        [f"{k}={v}" for k, v in sets.items()])


@pytest.fixture(scope="module")
def dpo_run(files):
    out = files / "dpo"
    return out, dpo.run(config(files), out, progress=False)


def test_dpo_raises_held_out_preference_accuracy(dpo_run):
    out, s = dpo_run
    print(f"held-out policy accuracy {s['base_val_policy_accuracy']:.3f} -> "
          f"{s['val_policy_accuracy']:.3f}, reward accuracy {s['base_val_accuracy']:.3f} -> "
          f"{s['val_accuracy']:.3f}, margin {s['val_margin']:.3f}")
    assert abs(s["base_val_loss"] - np.log(2)) < 1e-6 and s["base_val_margin"] == 0.0
    assert s["base_val_accuracy"] == 0.5
    assert s["val_accuracy"] >= 0.9 and s["val_margin"] > 0
    assert s["val_policy_accuracy"] >= 0.9 > s["base_val_policy_accuracy"]
    assert s["val_loss"] < np.log(2) - 0.1
    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    trained = [r for r in logged if "reward_chosen" in r]
    assert len(trained) == 16 and {"margin", "accuracy", "reward_rejected"} <= set(trained[0])


def test_a_dpo_run_loads_as_a_model(files, dpo_run):
    """infer.load reads the run with its trained parameters, and it now answers as Quill
    more likely than the base does."""
    out, _ = dpo_run
    tuned, base = infer.load(out), infer.load(files / "base")
    _, params, _, meta = run_checkpoint.load_params(out)
    assert meta["stage"] == "dpo" and meta["base"] == str(files / "base")
    ids = tuned.encode("who are you?")
    expected = np.asarray(model.forward(params, np.asarray([ids]), tuned.config)[0][0])
    np.testing.assert_allclose(tuned.logits(ids), expected, atol=1e-5)
    assert np.abs(tuned.logits(ids) - base.logits(ids)).max() > 1e-2


def test_frozen_reference_and_accumulation_train_like_the_default(files):
    """A frozen reference and the precomputed one are one loss, and so are two microbatches
    and one batch (a pair is never split between them): the same run to float32 noise."""
    sixteen = {"steps": 3, "eval_every": 3, "data.batch_size": 16}  # 8 devices, 2 microbatches
    short = dpo.run(config(files, **sixteen), files / "pre16", progress=False)
    for name, sets in (("frozen", {"dpo.reference": "frozen"}),
                       ("accum", {"data.grad_accum": 2})):
        other = dpo.run(config(files, **sixteen, **sets), files / name, progress=False)
        for key in ("val_loss", "val_margin", "loss"):
            assert abs(other[key] - short[key]) < 1e-4, (name, key)
        assert other["val_margin"] > 0


def test_lora_dpo_learns_and_saves_only_adapters(files):
    s = dpo.run(config(files, **{"lora.rank": 4, "optim.lr": 3e-2}), files / "lora",
                progress=False)
    _, adapters, _, meta = run_checkpoint.load_params(files / "lora")
    assert set(adapters) == {"layers"} and meta["lora"]["rank"] == 4
    assert s["val_accuracy"] >= 0.9


def test_bad_pairs_are_refused_with_their_line(files):
    good = json.dumps({"prompt": TRAIN[0][0], "chosen": TRAIN[0][1], "rejected": TRAIN[0][2]})
    bad = [json.dumps({"prompt": TRAIN[0][0], "chosen": TRAIN[0][1]}),
           json.dumps({"prompt": TRAIN[0][0], "chosen": {"role": "user", "content": "x"},
                       "rejected": TRAIN[0][2]}),
           json.dumps({"prompt": [{"role": "sysadmin", "content": "x"}],
                       "chosen": TRAIN[0][1], "rejected": TRAIN[0][2]})]
    for i, line in enumerate(bad):
        path = files / f"bad{i}.jsonl"
        path.write_text(f"{good}\n\n{line}\n")
        with pytest.raises(conversations.ConversationError, match=rf"bad{i}.jsonl:3: "):
            dpo.run(config(files, **{"dpo.pairs": str(path)}), files / "never", progress=False)
    with pytest.raises(ConfigError, match="dpo.beta"):
        dpo.run(config(files, **{"dpo.beta": 0.0}), files / "never", progress=False)
    assert not (files / "never").exists()


def test_cli_refuses_a_bad_pair_in_one_line(files, capsys):
    from train.__main__ import main

    path = files / "cli_bad.jsonl"
    path.write_text('{"prompt": [], "chosen": {}, "rejected": {}}\n')
    code = main(["dpo", "--base", str(files / "base"), "--pairs", str(path), "--out",
                 str(files / "cli_never"), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0
    assert err.startswith(f"error: {path}:1: ") and '"prompt"' in err
    assert not (files / "cli_never").exists()


def test_earlier_assistant_turns_of_the_prompt_are_not_scored(files):
    from train.preference_data import render_answer

    base = infer.load(files / "base")
    prompt = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Hello."},
              {"role": "user", "content": "who are you?"}]
    ids, mask = render_answer(base, prompt, {"role": "assistant", "content": "I am Quill."})
    end = base.tokenizer.encode_single_token("<|assistant_end|>")
    assert [t for t, m in zip(ids, mask) if m] == base.tokenizer.encode_ordinary(
        "I am Quill.") + [end]


def test_reward_model_learns_the_held_out_preference(files):
    s = rm.run(config(files, section="rm"), files / "rm", progress=False)
    print(f"reward model held-out pair accuracy {s['base_val_accuracy']:.3f} -> "
          f"{s['val_accuracy']:.3f}")
    assert s["base_val_accuracy"] == 0.5 and abs(s["base_val_loss"] - np.log(2)) < 1e-6
    assert s["val_accuracy"] >= 0.9 and s["val_loss"] < np.log(2) - 0.1
    chosen = [{"role": "user", "content": "who is there?"},
              {"role": "assistant", "content": "I am Quill."}]
    rejected = chosen[:1] + [{"role": "assistant", "content": "I am Bob."}]
    r = rm.score(files / "rm", [chosen, rejected])
    assert r[0] > r[1]


def _dpo_cmd(files, config_file, out):
    return [sys.executable, "-m", "train", "dpo", "--base", str(files / "base"), "--pairs",
            str(files / "train.jsonl"), "--val", str(files / "val.jsonl"), "--config",
            str(config_file), "--out", str(out), "--no-progress"]


def test_sigkill_resume_is_bitwise_identical(files, dpo_run):
    """A DPO run killed after a checkpoint and rerun ends with the uninterrupted run's params."""
    config_file = files / "dpo.json"
    config_file.write_text(json.dumps(SETTINGS))
    out = files / "killed"
    rerun = kill_after_checkpoint_then_rerun(_dpo_cmd(files, config_file, out), out, 8)
    summary = json.loads(rerun.stdout[rerun.stdout.index("{"):])
    assert summary["base_val_policy_accuracy"] == dpo_run[1]["base_val_policy_accuracy"]
    _, ref, _, _ = run_checkpoint.load_params(dpo_run[0])
    _, res, _, _ = run_checkpoint.load_params(out)
    for a, b in zip(jax.tree.leaves(ref), jax.tree.leaves(res)):
        assert np.array_equal(np.asarray(a), np.asarray(b))


def test_negative_rpo_alpha_and_reward_head_std_are_refused_by_name(files, tmp_path):
    with pytest.raises(ConfigError, match="dpo.rpo_alpha"):
        dpo.check(config(files, **{"dpo.rpo_alpha": -1.0}))
    with pytest.raises(ConfigError, match="rm.head_init_std"):
        rm.run(config(files, section="rm", **{"rm.head_init_std": -0.1}), tmp_path / "rm",
               progress=False)
    assert not (tmp_path / "rm").exists()  # refused before anything is written
