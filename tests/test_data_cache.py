"""Where training data comes from: a source prepared once into one cache (not the working
directory), keyed by its files' content, and a folder from `train prepare` used as it is."""

import json
import os

import numpy as np
import pytest

from train import config as train_config
from train import data_source, prepare
from train import tokenizer as tk

DOCS = [f"Document {i}: the quick brown fox {'jumps ' * (i % 4 + 1)}over the lazy dog."
        for i in range(30)]


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TWOFILES_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)  # whatever is written relative to the working directory shows
    return tmp_path / "cache"


def write_corpus(path, docs):
    path.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    return path


def config(source) -> train_config.TrainConfig:
    return train_config.from_dict({"model": {"preset": "tiny", "vocab_size": 300},
                                   "data": {"source": str(source)}})


def decoded(data_dir) -> list[str]:
    meta = prepare.read_meta(data_dir)
    enc = tk.load(os.path.join(data_dir, "tokenizer.json"))
    docs = []
    for split in prepare.SPLITS:
        for shard in meta[split]["shards"]:
            ids = np.fromfile(os.path.join(data_dir, shard["file"]), dtype=meta["dtype"])
            starts = list(np.load(os.path.join(data_dir, shard["docs_file"])))
            docs += [enc.decode(ids[a + 1:b].tolist())
                     for a, b in zip(starts, starts[1:] + [len(ids)])]
    return sorted(docs)


def test_cache_is_one_place_and_edited_files_are_prepared_again(cache, tmp_path, capsys):
    src = write_corpus(tmp_path / "corpus.jsonl", DOCS)
    first, _ = data_source.resolve(config(src))
    assert first.startswith(str(cache / "data"))
    assert str(cache) in capsys.readouterr().out  # the user is told where it went
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "corpus.jsonl"]
    meta_file = os.path.join(first, "meta.json")
    stamp = os.stat(meta_file).st_mtime_ns
    assert data_source.resolve(config(src))[0] == first  # unchanged: reused, not rewritten
    assert os.stat(meta_file).st_mtime_ns == stamp

    # Same size and same mtime, different words: a size+mtime key would reuse the old shards.
    before = os.stat(src)
    edited = [d.replace("lazy", "idle").replace("quick", "swift") for d in DOCS]
    write_corpus(src, edited)
    os.utime(src, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert os.stat(src).st_size == before.st_size
    second, _ = data_source.resolve(config(src))
    assert second != first
    assert decoded(second) == sorted(edited) and decoded(first) == sorted(DOCS)


def test_a_prepared_folder_feeds_training_as_it_is(cache, tmp_path):
    from train import cli_data

    import argparse
    parser = argparse.ArgumentParser()
    cli_data.add_subcommands(parser.add_subparsers(dest="command", required=True))

    def run(*argv):
        args = parser.parse_args(argv)
        return args.func(args)

    src = write_corpus(tmp_path / "corpus.jsonl", DOCS)
    assert run("tokenizer", "--input", str(src), "--vocab-size", "280", "--out", "tok.json") == 0
    assert run("prepare", "--source", str(src), "--tokenizer", "tok.json", "--out", "data/demo",
               "--no-progress") == 0
    cfg = train_config.apply_overrides(config("demo"), ["data.source=data/demo"])
    data_dir, meta = data_source.resolve(cfg)
    assert data_dir == "data/demo"
    assert meta["tokenizer_fingerprint"] == tk.fingerprint(tk.load("tok.json"))
    assert not cache.exists()  # nothing prepared again, no tokenizer trained
    # A model too small for the folder's vocabulary says which setting to change.
    small = train_config.apply_overrides(cfg, ["model.vocab_size=270"])
    with pytest.raises(train_config.ConfigError, match="model.vocab_size=280"):
        data_source.resolve(small)


def test_prepare_refuses_to_reuse_shards_of_edited_files(tmp_path):
    src = write_corpus(tmp_path / "corpus.jsonl", DOCS)
    tok = tmp_path / "tok.json"
    tk.save(tok, tk.train_tokenizer(DOCS, 280)[0])
    out = tmp_path / "out"
    meta = prepare.prepare(str(src), tok, out, progress=False)
    assert prepare.prepare(str(src), tok, out, progress=False) == meta
    write_corpus(src, DOCS[:-1] + ["A new last document."])
    with pytest.raises(prepare.PrepareError, match="made before its files changed.*--overwrite"):
        prepare.prepare(str(src), tok, out, progress=False)
    prepare.prepare(str(src), tok, out, overwrite=True, progress=False)
    assert "A new last document." in decoded(out)


def test_pretrain_trains_on_a_folder_from_train_prepare(tmp_path):
    """The README's pipeline connects: `train prepare --out DIR`, then `train pretrain
    --set data.source=DIR` trains on those shards with their tokenizer, preparing nothing."""
    import subprocess
    import sys

    from infer.formats import run_checkpoint
    from tests.train_helpers import REPO, cli_env

    env = {**cli_env(devices=1), "TWOFILES_CACHE": str(tmp_path / "cache")}
    src = write_corpus(tmp_path / "corpus.jsonl", DOCS * 10)
    data = tmp_path / "data"

    def train(*argv):
        proc = subprocess.run([sys.executable, "-m", "train", *argv], env=env, cwd=REPO,
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]

    train("tokenizer", "--input", str(src), "--vocab-size", "300", "--out", str(tmp_path / "t.json"))
    train("prepare", "--source", str(src), "--tokenizer", str(tmp_path / "t.json"), "--out",
          str(data), "--no-progress")
    out = tmp_path / "run"
    train("pretrain", "--config", "tiny", "--out", str(out), "--no-progress",
          "--set", f"data.source={data}", "--set", "model.vocab_size=300",
          "--set", "data.seq_len=32", "--set", "steps=2", "--set", "eval_every=0",
          "--set", "data.eval_batches=1", "--set", "async_checkpointing=false")
    _, _, tokenizer_doc, meta = run_checkpoint.load_params(out)
    fingerprint = tk.fingerprint(tk.load(tmp_path / "t.json"))
    assert meta["tokenizer_fingerprint"] == prepare.read_meta(data)["tokenizer_fingerprint"]
    assert meta["tokenizer_fingerprint"] == fingerprint
    assert tk.fingerprint(tk.load(out / "tokenizer.json")) == fingerprint
    assert not (tmp_path / "cache").exists()


def test_a_missing_source_says_what_data_source_takes(cache):
    with pytest.raises(FileNotFoundError, match=r"data\.source: .*'data/demoo' not found.*"
                                                r"train prepare --out DIR"):
        data_source.resolve(config("data/demoo"))
    assert not cache.exists()
