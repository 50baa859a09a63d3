"""The tokenizer: exact round trips, agreement with two independent BPE encoders, plain-text
special strings, the file format and its fingerprint, and clear errors."""

import json

import pytest
import regex
from hypothesis import given, settings
from hypothesis import strategies as st

from train import corpus
from train import tokenizer as tk


@pytest.fixture(scope="module")
def demo_docs():
    return list(corpus.limited(corpus.open_source("demo").documents(), 4))


@pytest.fixture(scope="module")
def hf_and_enc(demo_docs):
    """A small tokenizer trained on two plays, as HF trained it and as a tiktoken Encoding."""
    hf = tk.train_hf(demo_docs[:2], 1024)
    return hf, tk.encoding(tk.ranks_from_hf(hf))


@pytest.fixture(scope="module")
def tok_file(hf_and_enc, tmp_path_factory):
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    tk.save(path, hf_and_enc[1]._mergeable_ranks)
    return path


@pytest.fixture(scope="module")
def enc(tok_file):
    return tk.load(tok_file)


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_round_trip_arbitrary_unicode(enc, text):
    ids = tk.encode_text(enc, text)
    assert enc.decode(ids) == text
    assert all(0 <= i < enc.n_vocab - len(tk.SPECIAL_TOKENS) for i in ids)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.text(max_size=8), st.sampled_from(tk.SPECIAL_TOKENS)), max_size=8))
def test_special_strings_in_user_text_stay_plain_text(enc, pieces):
    text = "".join(pieces)
    ids = tk.encode_text(enc, text)
    specials = set(enc._special_tokens.values())
    assert not specials & set(ids)
    assert enc.decode(ids) == text


def test_specials_follow_ranks_and_vocab_size_is_exact(enc):
    assert enc.n_vocab == 1024
    n_ranks = 1024 - len(tk.SPECIAL_TOKENS)
    for i, name in enumerate(tk.SPECIAL_TOKENS):
        assert enc.encode_single_token(name) == n_ranks + i
    assert tk.bos_id(enc) == n_ranks


def _bytes_of_hf_tokens(tokens):
    decode = {c: b for b, c in tk.byte_to_unicode().items()}
    return [bytes(decode[c] for c in t) for t in tokens]


def test_ids_agree_with_hf_tokenizers_encoding(hf_and_enc, demo_docs):
    # Held-out plays, encoded by HF's BPE (merge priorities) and by tiktoken (ranks).
    hf, enc = hf_and_enc
    for doc in demo_docs[2:]:
        ours = [enc.decode_single_token_bytes(i) for i in enc.encode_ordinary(doc)]
        assert ours == _bytes_of_hf_tokens(hf.encode(doc).tokens)


def _reference_bpe(ranks: dict, pattern: str, text: str) -> list[int]:
    """Textbook byte-level BPE: split by the pattern, then merge the lowest-ranked pair."""
    ids = []
    for piece in regex.findall(pattern, text):
        parts = [bytes([b]) for b in piece.encode("utf-8")]
        while len(parts) > 1:
            pairs = [(ranks.get(a + b), i) for i, (a, b) in enumerate(zip(parts, parts[1:]))]
            rank, i = min((p for p in pairs if p[0] is not None), default=(None, None))
            if rank is None:
                break
            parts[i:i + 2] = [parts[i] + parts[i + 1]]
        ids += [ranks[p] for p in parts]
    return ids


def test_ids_agree_with_reference_merge_loop(enc, demo_docs):
    sample = demo_docs[3][:4000] + " Ünïcödé — 東京 🙂 1234567 x\r\n\t  y's   'LL"
    assert enc.encode_ordinary(sample) == _reference_bpe(enc._mergeable_ranks, tk.PATTERN, sample)


def test_file_round_trip_and_fingerprint(enc, tok_file, tmp_path):
    doc = json.loads(tok_file.read_text())
    assert doc["format"] == "twofiles-bpe" and doc["vocab_size"] == enc.n_vocab
    assert tk.fingerprint(tok_file) == tk.fingerprint(enc) == doc["fingerprint"]
    # Another tokenizer (one rank fewer) has another fingerprint.
    ranks = dict(enc._mergeable_ranks)
    ranks.pop(max(ranks, key=ranks.get))
    other = tmp_path / "other.json"
    assert tk.save(other, ranks) != doc["fingerprint"]
    # A damaged file is refused, not used.
    doc["ranks"][300], doc["ranks"][301] = doc["ranks"][301], doc["ranks"][300]
    damaged = tmp_path / "damaged.json"
    damaged.write_text(json.dumps(doc))
    with pytest.raises(tk.TokenizerError, match="damaged"):
        tk.load(damaged)


def test_clear_errors(tmp_path, demo_docs):
    with pytest.raises(FileNotFoundError, match="nope.json"):
        tk.load(tmp_path / "nope.json")
    (tmp_path / "x.json").write_text('{"a": 1}')
    with pytest.raises(tk.TokenizerError, match="not a twofiles tokenizer"):
        tk.load(tmp_path / "x.json")
    with pytest.raises(tk.TokenizerError, match="too small"):
        tk.train_tokenizer(["some text"], 200)
    with pytest.raises(tk.TokenizerError, match="empty corpus"):
        tk.train_tokenizer(["", ""], 512)
    with pytest.raises(tk.TokenizerError, match="only supports"):
        tk.train_tokenizer(["tiny corpus"], 4096)
