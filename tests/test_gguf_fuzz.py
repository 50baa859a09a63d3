"""Truncated and corrupted GGUF files: a clear GGUFError naming the file, never a hang, never an
exception from deep inside numpy or the gguf package."""

import random
import signal

import pytest

from infer.formats.export import export
from infer.formats.gguf_load import load_gguf
from infer.formats.gguf_read import GGUFError
from tests.test_export_common import tiny_twofiles_model

SECONDS_PER_CASE = 20  # a hang shows up as a timeout, not a stuck test run


@pytest.fixture(scope="module")
def gguf_bytes(tmp_path_factory):
    path = tmp_path_factory.mktemp("fuzz") / "tiny.gguf"
    export(tiny_twofiles_model(), "gguf", path, dtype="q8_0")
    return path.read_bytes()


def _timeout(signum, frame):
    raise TimeoutError("loading took too long (a hang?)")


def _check_loads_or_refuses(path):
    """Loads, or raises GGUFError naming the file; anything else fails the test."""
    old = signal.signal(signal.SIGALRM, _timeout)
    signal.alarm(SECONDS_PER_CASE)
    try:
        load_gguf(path)
        return "loaded"
    except GGUFError as e:
        assert str(e).startswith(str(path)), f"error does not name the file: {e}"
        return "refused"
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def test_truncated_files_are_refused(gguf_bytes, tmp_path):
    rng = random.Random(0)
    cuts = sorted({0, 3, 4, 8, 16, 23, 24, 25, 100} | {rng.randrange(len(gguf_bytes))
                                                       for _ in range(60)})
    for cut in cuts:
        path = tmp_path / f"cut{cut}.gguf"
        path.write_bytes(gguf_bytes[:cut])
        assert _check_loads_or_refuses(path) == "refused", f"cut at {cut} loaded"


def test_corrupted_files_load_or_are_refused(gguf_bytes, tmp_path):
    rng = random.Random(1)
    outcomes = {"loaded": 0, "refused": 0}
    header_end = gguf_bytes.find(b"blk.0.attn_q.weight") + 200  # metadata and tensor infos
    for case in range(150):
        data = bytearray(gguf_bytes)
        kind = case % 3
        if kind == 0:  # a few random bytes anywhere in the metadata / tensor table
            for _ in range(rng.randint(1, 4)):
                data[rng.randrange(header_end)] = rng.randrange(256)
        elif kind == 1:  # a huge or negative 8-byte length / count / offset
            pos = rng.randrange(4, header_end - 8)
            data[pos:pos + 8] = rng.choice([b"\xff" * 8, b"\x00\x00\x00\x00\x00\x00\x00\x80",
                                            (2**40).to_bytes(8, "little")])
        else:  # bytes flipped in the tensor data
            for _ in range(rng.randint(1, 16)):
                data[rng.randrange(header_end, len(data))] ^= 0xFF
        path = tmp_path / f"case{case}.gguf"
        path.write_bytes(bytes(data))
        outcomes[_check_loads_or_refuses(path)] += 1
    assert outcomes["refused"] > 30 and outcomes["loaded"] > 10, outcomes


@pytest.mark.parametrize("key", ["llama.block_count", "llama.embedding_length",
                                 "llama.feed_forward_length", "llama.attention.head_count",
                                 "llama.attention.head_count_kv", "llama.context_length"])
def test_absurd_shape_metadata(gguf_bytes, tmp_path, key):
    """Huge or zero sizes must be caught before anything is allocated or looped over."""
    at = gguf_bytes.find(key.encode()) + len(key) + 4  # after the key and its uint32 type tag
    for value in (0, 10**9, 2**31 + 1):
        data = bytearray(gguf_bytes)
        data[at:at + 4] = value.to_bytes(4, "little")
        path = tmp_path / f"{key}-{value}.gguf"
        path.write_bytes(bytes(data))
        outcome = _check_loads_or_refuses(path)
        assert outcome == "refused" or key == "llama.context_length", (key, value)


def test_not_gguf_and_wrong_architecture(gguf_bytes, tmp_path):
    import infer

    path = tmp_path / "text.gguf"
    path.write_bytes(b"hello, I am not a model file at all" * 10)
    with pytest.raises(GGUFError, match="text.gguf: not a GGUF file"):
        infer.load(path)
    arch = tmp_path / "arch.gguf"
    arch.write_bytes(gguf_bytes.replace(b"llama", b"qwen2", 1))
    with pytest.raises(GGUFError, match="arch.gguf.*architecture 'qwen2' is not supported"):
        infer.load(arch)
