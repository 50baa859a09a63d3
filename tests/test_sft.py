"""Supervised fine-tuning (train.sft): what it learns, what it never learns, LoRA, and resume."""

import json
import subprocess
import sys

import jax
import numpy as np
import pytest

import infer
import model
from infer.formats import run_checkpoint
from model.config import ConfigError
from tests.train_helpers import REPO, cli_env, kill_after_checkpoint_then_rerun
from train import config as train_config
from train import sft
from train.datasets import conversations

# Short conversations a tiny model can learn: who it is, and a few sums.
CHATS = [[{"role": "user", "content": q}, {"role": "assistant", "content": a}] for q, a in [
    ("who are you?", "I am Quill."), ("what is your name?", "Quill."),
    ("what is 2 plus 2?", "4."), ("what is 3 plus 4?", "7."), ("hello!", "Hi, I am Quill."),
    ("name?", "Quill."), ("what is 5 plus 1?", "6."), ("who made you?", "The twofiles team."),
]]
VAL = [[{"role": "user", "content": "tell me your name"}, {"role": "assistant", "content": "Quill."}],
       [{"role": "user", "content": "what is 2 plus 3?"}, {"role": "assistant", "content": "5."}]]
SETTINGS = {"data": {"batch_size": 8}, "steps": 24, "eval_every": 12, "checkpoint_every": 6,
            "log_every": 1, "optim": {"lr": 3e-3, "warmup_steps": 0, "weight_decay": 0.0}}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A tiny twofiles base (random weights, exported as the two files) and conversation files."""
    from tests.test_export_common import CORPUS
    from tests.train_helpers import export_tiny_base

    root = tmp_path_factory.mktemp("sft")
    export_tiny_base(root, CORPUS * 4 + [json.dumps(CHATS)] * 4)
    conversations.write(root / "train.jsonl", CHATS)
    conversations.write(root / "val.jsonl", VAL)
    return root


def sft_config(files, **sets):
    d = json.loads(json.dumps(SETTINGS))
    d["sft"] = {"base": str(files / "base"), "data": str(files / "train.jsonl"),
                "val": str(files / "val.jsonl")}
    cfg = train_config.apply_overrides(train_config.from_dict(d),
                                       [f"{k}={v}" for k, v in sets.items()])
    return cfg


@pytest.fixture(scope="module")
def full_run(files):
    out = files / "full"
    return out, sft.run(sft_config(files), out, progress=False)


def test_batches_learn_exactly_the_assistant_tokens(files):
    """The mask the driver trains on counts the assistant's words and its end token, found by
    encoding them directly, not by the renderer."""
    base = infer.load(files / "base")
    examples, counts = sft.render_file(base, files / "train.jsonl", 65, truncate=False)
    end = base.tokenizer.encode_single_token("<|assistant_end|>")
    for (ids, mask), chat in zip(examples, CHATS):
        answer = base.tokenizer.encode_ordinary(chat[1]["content"]) + [end]
        assert [t for t, m in zip(ids, mask) if m] == answer
    assert counts["assistant_tokens"] == sum(
        len(base.tokenizer.encode_ordinary(c[1]["content"])) + 1 for c in CHATS)


def test_a_renderer_that_drops_the_mask_is_caught(files, monkeypatch):
    from infer.chat import render as render_mod

    real = render_mod.render
    monkeypatch.setattr(render_mod, "render",
                        lambda *a, **k: (real(*a, **k)[0], [1] * len(real(*a, **k)[0])))
    with pytest.raises(ConfigError, match="covers every token"):
        sft.run(sft_config(files), files / "never", progress=False)
    assert not (files / "never").exists()


def test_targets_at_masked_positions_change_nothing(files):
    """Replacing every prompt and padding target leaves the loss and gradients bit-identical."""
    base = infer.load(files / "base")
    examples, _ = sft.render_file(base, files / "train.jsonl", 65, truncate=False)
    from train import packing
    from train.losses import masked_next_token_loss

    batch = packing.to_batch(packing.pack(examples, 65))
    other = dict(batch, targets=np.where(batch["loss_mask"] == 0,
                                         (batch["targets"] + 7) % base.config.vocab_size,
                                         batch["targets"]))
    loss = jax.value_and_grad(lambda p, b: masked_next_token_loss(p, b, None, base.config)[0])
    (a, ga), (b, gb) = loss(base.params, batch), loss(base.params, other)
    assert np.array_equal(a, b)
    for x, y in zip(jax.tree.leaves(ga), jax.tree.leaves(gb)):
        assert np.array_equal(x, y)
    assert int(batch["loss_mask"].sum()) < int((batch["segment_ids"] > 0).sum()) / 2


def test_full_fine_tuning_learns_and_loads_as_a_model(files, full_run):
    out, summary = full_run
    assert summary["val_loss"] < summary["base_val_loss"] - 1.0
    assert summary["train"] == {"conversations": 8, "truncated": 0,
                                "tokens": summary["train"]["tokens"],
                                "assistant_tokens": summary["train"]["assistant_tokens"]}
    tuned = infer.load(out)
    _, params, _, _ = run_checkpoint.load_params(out)
    ids = tuned.encode("who are you?")
    expected = np.asarray(model.forward(params, np.asarray([ids]), tuned.config)[0][0])
    np.testing.assert_allclose(tuned.logits(ids), expected, atol=1e-5)
    reply = tuned.chat([{"role": "user", "content": "who are you?"}], max_new_tokens=8,
                       temperature=0.0)
    assert "Quill" in reply


def test_a_run_trained_on_eight_devices_loads_on_one(files, full_run):
    """The suite trains on eight simulated devices; a user's process has one."""
    code = (f"import infer; m = infer.load({str(full_run[0])!r}); "
            "print(m.chat([{'role': 'user', 'content': 'who are you?'}], max_new_tokens=8, "
            "temperature=0.0))")
    proc = subprocess.run([sys.executable, "-c", code], env=cli_env(1), cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Quill" in proc.stdout


def test_lora_trains_and_saves_only_adapters(files, full_run):
    out = files / "lora"
    summary = sft.run(sft_config(files, **{"lora.rank": 4, "optim.lr": 3e-2}), out,
                      progress=False)
    _, adapters, _, meta = run_checkpoint.load_params(out)
    assert set(adapters) == {"layers"} and set(adapters["layers"]["wq"]) == {"a", "b"}
    assert summary["trained_params"] == sum(x.size for x in jax.tree.leaves(adapters))
    assert summary["trained_params"] < model.count_params(infer.load(files / "base").config
                                                          )["params"] / 4
    assert summary["val_loss"] < summary["base_val_loss"] - 0.5
    base, tuned = infer.load(files / "base"), infer.load(out)
    from model import lora

    merged = lora.merge(base.params, adapters, meta["lora"]["alpha"])
    ids = base.encode("hello!")
    expected = np.asarray(model.forward(merged, np.asarray([ids]), base.config)[0][0])
    np.testing.assert_allclose(tuned.logits(ids), expected, atol=1e-5)
    assert np.abs(tuned.logits(ids) - base.logits(ids)).max() > 1e-2


def test_too_long_conversation_is_refused_with_its_line(files):
    long = [[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "ok " * 200}]]
    conversations.write(files / "long.jsonl", CHATS[:2] + long)
    cfg = sft_config(files, **{"sft.data": str(files / "long.jsonl"), "data.seq_len": 48})
    with pytest.raises(ConfigError, match=r"long.jsonl:3: .* longer than a training row"):
        sft.run(cfg, files / "long", progress=False)
    summary = sft.run(train_config.apply_overrides(cfg, ["sft.truncate=true", "steps=1"]),
                      files / "long_cut", progress=False)
    assert summary["train"]["truncated"] == 1


def _sft_cmd(files, config, out):
    return [sys.executable, "-m", "train", "sft", "--base", str(files / "base"), "--data",
            str(files / "train.jsonl"), "--val", str(files / "val.jsonl"), "--config",
            str(config), "--out", str(out), "--no-progress"]


def test_sigkill_resume_is_bitwise_identical(files, full_run):
    """An SFT run killed after a checkpoint and rerun ends with the uninterrupted run's params."""
    config = files / "sft.json"
    config.write_text(json.dumps(SETTINGS))
    out = files / "killed"
    rerun = kill_after_checkpoint_then_rerun(_sft_cmd(files, config, out), out, 12)
    _, ref, _, _ = run_checkpoint.load_params(full_run[0])
    _, res, _, _ = run_checkpoint.load_params(out)
    for a, b in zip(jax.tree.leaves(ref), jax.tree.leaves(res)):
        assert np.array_equal(np.asarray(a), np.asarray(b))
