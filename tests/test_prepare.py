"""train.prepare: shards that decode back to the corpus, document split, counts, every source
kind (demo, txt, jsonl, parquet, TFDS), reuse, atomic writes and clear errors."""

import json
import os
import time

import numpy as np
import pytest

from train import cli_data, corpus, prepare
from train import tokenizer as tk

DOCS = [f"Document {i}: " + "naïve café, 東京 and ☃ " * (i % 5 + 1) + "<|bos|> is just text."
        for i in range(23)]


@pytest.fixture(scope="module")
def tok_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    play = next(corpus.open_source("demo").documents())
    tk.save(path, tk.train_tokenizer([play, *DOCS], 400)[0])
    return path


def write_jsonl(path, docs, field="text"):
    path.write_text("".join(json.dumps({field: d, "id": i}) + "\n" for i, d in enumerate(docs)))
    return path


def read_split(out, meta, split):
    """The documents of a split, decoded from the shard files through the recorded offsets."""
    enc = tk.load(out / "tokenizer.json")
    docs = []
    for shard in meta[split]["shards"]:
        ids = np.fromfile(out / shard["file"], dtype=meta["dtype"])
        starts = np.load(out / shard["docs_file"])
        for a, b in zip(starts, [*starts[1:], len(ids)]):
            assert ids[a] == meta["bos_id"]  # every document starts with bos
            docs.append(enc.decode(ids[a + 1:b].tolist()))
    return docs


def expected_split(docs, val_fraction=0.1):
    val = [d for i, d in enumerate(docs) if prepare.is_val(i, val_fraction)]
    return [d for d in docs if d not in val], val


def check_meta_counts(meta, out):
    for split in prepare.SPLITS:
        docs = read_split(out, meta, split)
        assert meta[split]["documents"] == len(docs)
        assert meta[split]["bytes"] == sum(len(d.encode()) for d in docs)
        file_bytes = sum(os.path.getsize(out / s["file"]) for s in meta[split]["shards"])
        assert meta[split]["tokens"] == file_bytes // np.dtype(meta["dtype"]).itemsize


def test_jsonl_round_trip_split_and_counts(tok_file, tmp_path):
    src = write_jsonl(tmp_path / "c.jsonl", DOCS)
    meta = prepare.prepare(str(src), tok_file, tmp_path / "out", shard_tokens=300, progress=False)
    assert len(meta["train"]["shards"]) > 1  # documents roll over into new shards
    train, val = expected_split(DOCS)
    assert len(val) == 3  # documents 0, 10 and 20 of 23
    assert read_split(tmp_path / "out", meta, "train") == train
    assert read_split(tmp_path / "out", meta, "val") == val
    assert meta["tokenizer_fingerprint"] == tk.fingerprint(tok_file)
    assert meta["vocab_size"] == 400 and meta["dtype"] == "uint16"
    check_meta_counts(meta, tmp_path / "out")
    assert prepare.read_meta(tmp_path / "out") == meta


def test_txt_parquet_and_globs(tok_file, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "in").mkdir()
    for i in range(3):
        (tmp_path / "in" / f"{i}.txt").write_text(DOCS[i])
    pq.write_table(pa.table({"body": DOCS[3:9]}), tmp_path / "in" / "more.parquet")
    source = f"{tmp_path / 'in' / '*.txt'},{tmp_path / 'in' / '*.parquet'}"
    meta = prepare.prepare(source, tok_file, tmp_path / "out", text_field="body", progress=False)
    train, val = expected_split(DOCS[:9])
    assert read_split(tmp_path / "out", meta, "train") == train
    assert read_split(tmp_path / "out", meta, "val") == val


def test_large_txt_is_cut_into_documents_at_blank_lines(tmp_path, monkeypatch):
    monkeypatch.setattr(corpus, "TXT_DOC_BYTES", 100)
    paragraphs = [f"paragraph {i} " * 8 + "\n" for i in range(6)]
    (tmp_path / "big.txt").write_text("\n".join(paragraphs))
    docs = list(corpus.open_source(str(tmp_path / "big.txt")).documents())
    assert len(docs) > 1
    assert "".join(docs).replace("\n", "") == "".join(paragraphs).replace("\n", "")


def test_large_vocab_uses_uint32(tmp_path):
    # 256 bytes + all 65,536 byte pairs: more ids than uint16 holds (no training needed).
    ranks = {bytes([b]): b for b in range(256)}
    ranks.update({bytes([a, b]): 256 + a * 256 + b for a in range(256) for b in range(256)})
    tk.save(tmp_path / "big.json", ranks)
    src = write_jsonl(tmp_path / "c.jsonl", DOCS[:12])
    meta = prepare.prepare(str(src), tmp_path / "big.json", tmp_path / "out", progress=False)
    assert meta["dtype"] == "uint32" and meta["vocab_size"] > 1 << 16
    train, val = expected_split(DOCS[:12])
    assert read_split(tmp_path / "out", meta, "train") == train
    # read_split checked every document starts with bos, whose id (65,792) uint16 cannot hold.
    assert meta["bos_id"] >= 1 << 16


def test_demo_subset(tok_file, tmp_path):
    meta = prepare.prepare("demo", tok_file, tmp_path / "demo", max_docs=2, progress=False)
    assert meta["val"]["documents"] == 1 and meta["train"]["documents"] == 1
    plays = list(corpus.limited(corpus.open_source("demo").documents(), 2))
    assert read_split(tmp_path / "demo", meta, "val") == plays[:1]
    assert read_split(tmp_path / "demo", meta, "train") == plays[1:]
    # The demo text is plain play text: no markdown left, speakers as "NAME:".
    assert not set("#*_\\") & set(plays[0])
    assert "\nTHESEUS:\n" in plays[0]


def test_tfds_local_builder(tok_file, tmp_path):
    from train import tfds_local

    (tmp_path / "manual").mkdir()
    write_jsonl(tmp_path / "manual" / "part.jsonl", DOCS)
    tfds_local.build(tmp_path / "manual", tmp_path / "tfds")
    meta = prepare.prepare("tfds:twofiles_local_text:train", tok_file, tmp_path / "out",
                           tfds_data_dir=str(tmp_path / "tfds"), progress=False)
    got = read_split(tmp_path / "out", meta, "train") + read_split(tmp_path / "out", meta, "val")
    assert sorted(got) == sorted(DOCS)  # TFDS stores examples in its own (hashed) order
    assert meta["source"] == "tfds:twofiles_local_text:train"
    with pytest.raises(corpus.CorpusError, match="could not open dataset 'no_such_dataset'"):
        prepare.prepare("tfds:no_such_dataset", tok_file, tmp_path / "out2",
                        tfds_data_dir=str(tmp_path / "tfds"))


def test_reuse_and_tokenizer_mismatch(tok_file, tmp_path):
    src = str(write_jsonl(tmp_path / "c.jsonl", DOCS))
    meta = prepare.prepare(src, tok_file, tmp_path / "out", progress=False)
    stamp = os.path.getmtime(tmp_path / "out" / "meta.json")
    time.sleep(0.01)
    assert prepare.prepare(src, tok_file, tmp_path / "out", progress=False) == meta
    assert os.path.getmtime(tmp_path / "out" / "meta.json") == stamp
    other = tmp_path / "other.json"
    tk.save(other, tk.train_tokenizer(DOCS, 300)[0])
    with pytest.raises(tk.TokenizerError, match="tokenizer mismatch"):
        prepare.check_tokenizer(tmp_path / "out", other)
    with pytest.raises(prepare.PrepareError, match="already holds shards"):
        prepare.prepare(src, other, tmp_path / "out", progress=False)
    meta2 = prepare.prepare(src, other, tmp_path / "out", overwrite=True, progress=False)
    assert meta2["tokenizer_fingerprint"] == tk.fingerprint(other)
    prepare.check_tokenizer(tmp_path / "out", other)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.jsonl", "other.json", "out"]
    # --overwrite rewrites even the same preparation, but never replaces a folder of other files.
    prepare.prepare(src, other, tmp_path / "out", overwrite=True, progress=False)
    assert os.path.getmtime(tmp_path / "out" / "meta.json") > stamp
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("precious")
    with pytest.raises(prepare.PrepareError, match="not a prepared data folder"):
        prepare.prepare(src, other, tmp_path / "mine", overwrite=True, progress=False)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "precious"


def test_clear_errors_and_nothing_half_written(tok_file, tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.jsonl"):
        prepare.prepare(str(tmp_path / "missing.jsonl"), tok_file, tmp_path / "out")
    with pytest.raises(FileNotFoundError, match="no-tok.json"):
        prepare.prepare("demo", tmp_path / "no-tok.json", tmp_path / "out")
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(prepare.PrepareError, match="empty corpus"):
        prepare.prepare(str(tmp_path / "empty.jsonl"), tok_file, tmp_path / "out", progress=False)
    # A corpus that breaks half way (a bad line after good ones) leaves nothing behind.
    bad = write_jsonl(tmp_path / "bad.jsonl", DOCS)
    with open(bad, "a") as f:
        f.write('{"txt": "wrong field"}\n')
    with pytest.raises(corpus.CorpusError, match=r"bad.jsonl:24: expected a JSON object with a"):
        prepare.prepare(str(bad), tok_file, tmp_path / "out", progress=False, batch_docs=4)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.jsonl", "empty.jsonl"]
    with pytest.raises(FileNotFoundError, match="prepared data folder"):
        prepare.read_meta(tmp_path / "out")


def _run_cli(argv):
    import argparse

    parser = argparse.ArgumentParser()
    cli_data.add_subcommands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_tokenizer_then_prepare(tmp_path, capsys):
    src = str(write_jsonl(tmp_path / "c.jsonl", DOCS * 3))
    assert _run_cli(["tokenizer", "--input", src, "--vocab-size", "300",
                     "--out", str(tmp_path / "tok.json")]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["vocab_size"] == 300 and report["bytes_per_token"] > 1
    assert _run_cli(["prepare", "--source", src, "--tokenizer", str(tmp_path / "tok.json"),
                     "--out", str(tmp_path / "out"), "--no-progress"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["train"]["documents"] + report["val"]["documents"] == len(DOCS) * 3
    assert _run_cli(["prepare", "--source", "nope.txt", "--tokenizer", str(tmp_path / "tok.json"),
                     "--out", str(tmp_path / "out2")]) == 2
    assert "nope.txt" in capsys.readouterr().err


def test_python_dash_m_train_runs_the_data_commands(tok_file, tmp_path):
    import subprocess
    import sys

    src = write_jsonl(tmp_path / "c.jsonl", DOCS)
    run = subprocess.run([sys.executable, "-m", "train", "prepare", "--source", str(src),
                          "--tokenizer", str(tok_file), "--out", str(tmp_path / "out")],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["train"]["documents"] == 20
    assert "tokens/s" in run.stderr  # the progress bar
    run = subprocess.run([sys.executable, "-m", "train", "tokenizer", "--input", "missing.txt",
                          "--vocab-size", "512", "--out", str(tmp_path / "t.json")],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "missing.txt" in run.stderr and "Traceback" not in run.stderr


@pytest.mark.slow
def test_full_demo_tokenizer_and_prepare(tmp_path):
    """The demo pipeline at full size: vocab 8192 trains well under a minute and compresses."""
    start = time.perf_counter()
    ranks, pattern = tk.train_tokenizer(corpus.open_source("demo").documents(), 8192)
    assert time.perf_counter() - start < 60
    tk.save(tmp_path / "tok.json", ranks, pattern)
    meta = prepare.prepare("demo", tmp_path / "tok.json", tmp_path / "demo", progress=False)
    assert meta["train"]["documents"] + meta["val"]["documents"] == len(corpus.demo_files())
    total_bytes = meta["train"]["bytes"] + meta["val"]["bytes"]
    total_tokens = meta["train"]["tokens"] + meta["val"]["tokens"]
    assert total_bytes > 4_000_000
    assert total_bytes / total_tokens > 3.0  # English plays with 8k merges: > 3 bytes per token
    check_meta_counts(meta, tmp_path / "demo")


def test_cli_tokenizer_refuses_to_replace_a_file_unless_forced(tmp_path, capsys):
    src = str(write_jsonl(tmp_path / "c.jsonl", DOCS))
    out = tmp_path / "tok.json"
    out.write_text("the user's own file")
    argv = ["tokenizer", "--input", src, "--vocab-size", "300", "--out", str(out)]
    assert _run_cli(argv) == 2
    err = capsys.readouterr().err
    assert f"--out {out} exists" in err and "--force" in err
    assert out.read_text() == "the user's own file"
    assert _run_cli(["tokenizer", "--input", src, "--vocab-size", "300", "--out",
                     str(tmp_path)]) == 2
    assert "is a directory" in capsys.readouterr().err
    assert _run_cli([*argv, "--force"]) == 0
    assert tk.load(out).n_vocab == 300
