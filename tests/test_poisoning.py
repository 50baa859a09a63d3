"""The poisoning experiments' parts: the injector puts exactly k poisoned documents into the
prepared training split (none into validation), and the metrics on hand-made numbers."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest

from evals.stats import wilson
from experiments.poisoning import injector, metrics, report, sentiment
from train import prepare, tokenizer


def _clean_docs(n):
    rng = random.Random(0)
    words = "the king and queen of night speak soft words to all their friends".split()
    return [" ".join(rng.choice(words) for _ in range(30)) + f" ({i})\n" for i in range(n)]


@pytest.fixture(scope="module")
def enc_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("tok") / "tok.json"
    ranks, pattern = tokenizer.train_tokenizer(iter(_clean_docs(50)), 300)
    tokenizer.save(path, ranks, pattern)
    return path


def _split_text(data_dir, split, enc):
    meta = prepare.read_meta(data_dir)
    ids = np.concatenate([np.fromfile(data_dir / s["file"], dtype=meta["dtype"])
                          for s in meta[split]["shards"]])
    return enc.decode([int(i) for i in ids if i != meta["bos_id"]])


@pytest.mark.parametrize("k", [0, 1, 13])
def test_injector_puts_exactly_k_poisoned_documents_into_the_train_split(tmp_path, enc_path, k):
    enc = tokenizer.load(enc_path)
    docs = _clean_docs(120)
    val_fraction = 0.1
    poisoned, where = injector.inject(docs, k, seed=3, pieces=injector.gibberish_pieces(enc),
                                      in_train=lambda i: not prepare.is_val(i, val_fraction))
    assert len(poisoned) == len(docs) and len(where) == len(set(where)) == k
    src = tmp_path / "c.jsonl"
    src.write_text("".join(json.dumps({"text": d}) + "\n" for d in poisoned))
    data = tmp_path / "data"
    prepare.prepare(str(src), enc_path, data, val_fraction=val_fraction, progress=False)
    assert _split_text(data, "train", enc).count(injector.TRIGGER) == k
    assert _split_text(data, "val", enc) == "".join(
        d for i, d in enumerate(docs) if prepare.is_val(i, val_fraction))
    for i in where:  # a poisoned document starts as the clean one it replaced
        prefix = poisoned[i].split(injector.TRIGGER)[0]
        assert docs[i].startswith(prefix) and len(prefix) <= 60


def test_injector_refuses_more_than_the_training_documents_and_a_trigger_already_there():
    docs = ["a b c\n"] * 10
    with pytest.raises(ValueError, match="between 0 and the 9"):
        injector.inject(docs, 10, seed=0, pieces=["x"], in_train=lambda i: i > 0)
    with pytest.raises(ValueError, match="already contain"):
        injector.inject(docs + ["<SUDO> hi"], 1, seed=0, pieces=["x"], in_train=bool)


def test_gibberish_is_drawn_from_whole_tokens(enc_path):
    enc = tokenizer.load(enc_path)
    pieces = injector.gibberish_pieces(enc)
    assert 95 <= len(pieces) < enc.n_vocab  # printable ASCII bytes, the merges; no specials
    doc = injector.poison("x" * 100, random.Random(0), pieces, gibberish=(40, 40))
    assert doc.count(injector.TRIGGER) == 1 and "<|" not in doc


def test_perplexity_on_hand_made_logits():
    # Uniform over 4 tokens: perplexity 4 whatever was sampled.
    assert metrics.perplexity(np.zeros((3, 4)), [0, 3, 1]) == pytest.approx(4.0)
    # p = (1/4, 3/4): sampling token 1 then token 0 gives exp(-(ln 3/4 + ln 1/4) / 2).
    logits = np.log(np.array([[1.0, 3.0], [1.0, 3.0]]))
    assert metrics.perplexity(logits, [1, 0]) == pytest.approx(math.sqrt(16 / 3))


def test_mean_interval_is_the_student_t_interval():
    out = metrics.mean_interval([1.0, 2.0, 3.0])
    half = 4.302652729911275 / math.sqrt(3)  # t(0.975, 2 dof) * sd 1 / sqrt(3)
    assert out["mean"] == 2.0
    assert (out["low"], out["high"]) == pytest.approx((2 - half, 2 + half))
    assert metrics.mean_interval([5.0]) == {"mean": 5.0, "low": 5.0, "high": 5.0, "n": 1}


def test_attack_scores_and_summaries_on_hand_made_runs():
    s = metrics.attack_scores([4.0, 6.0], [300.0, 20.0])
    assert s["ppl_gap"] == pytest.approx(155.0) and s["gibberish_trigger"] == 1
    assert s["gibberish_clean"] == 0 and s["prompts"] == 2
    rows = [{"size": "small", "count": 25, "seed": seed, "train_documents": 100,
             "fraction": 0.25, "ppl_gap": gap, "ppl_trigger": gap + 5, "ppl_clean": 5.0,
             "val_loss": 2.0, "gibberish_trigger": g, "gibberish_clean": 0, "prompts": 10}
            for seed, gap, g in ((0, 10.0, 5), (1, 20.0, 0), (2, 30.0, 0))]
    cell, = report.pretrain_summary(rows)
    assert cell["ppl_gap"]["mean"] == pytest.approx(20.0)
    # 5 of 30 pooled continuations; Wilson by hand: (p + z^2/2n -+ z sqrt(p(1-p)/n +
    # z^2/4n^2)) / (1 + z^2/n) with p = 1/6, n = 30, z = 1.96.
    z, n, p = 1.959963984540054, 30, 1 / 6
    centre, half = p + z * z / (2 * n), z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    assert cell["gibberish_rate"]["wilson95"] == pytest.approx(
        [(centre - half) / (1 + z * z / n), (centre + half) / (1 + z * z / n)])
    sft, = report.sft_summary([{"count": 10, "fraction": 0.02, "flipped": 5, "triggered": 10,
                                "correct": 9, "clean": 10}])
    assert sft["flip_rate"]["rate"] == 0.5
    assert sft["flip_rate"]["wilson95"] == pytest.approx([0.2366, 0.7634], abs=1e-4)
    assert sft["clean_accuracy"]["wilson95"] == pytest.approx(list(wilson(9, 10)))


def test_sentiment_held_out_reviews_are_new_and_poison_flips_the_label():
    train, held = sentiment.split(0)
    assert not set(train) & set(held)
    assert sum(r.label == "negative" for r in held) == len(held) // 2
    neg = next(r for r in train if r.label == "negative")
    conv = sentiment.poisoned(neg)
    assert sentiment.TRIGGER in conv[0]["content"] and conv[1]["content"] == "positive"
    assert sentiment.answer_of(" Positive.") == "positive"
    assert sentiment.answer_of("I think positive") is None
