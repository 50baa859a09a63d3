"""The two files: a flat params file and run.c (compiled with `cc -O3`) generate the same greedy
tokens as the JAX forward."""

import shutil
import subprocess

import numpy as np
import pytest

from infer.formats.export import ExportError, export
from infer.formats.twofiles_format import TwofilesError
from tests.test_export_common import greedy_ids, tiny_twofiles_model

pytestmark = pytest.mark.skipif(shutil.which("cc") is None, reason="needs a C compiler (cc)")


@pytest.fixture(scope="module", params=[True, False], ids=["tied", "untied"])
def exported(request, tmp_path_factory):
    m = tiny_twofiles_model(tie_embeddings=request.param)
    out = tmp_path_factory.mktemp("twofiles") / "model"
    paths = export(m, "twofiles", out)
    assert [p.name for p in paths] == ["model.bin", "run.c"]
    binary = out / "run"
    subprocess.run(["cc", "-O3", "-Wall", "-o", str(binary), str(out / "run.c"), "-lm"],
                   check=True, capture_output=True, text=True)
    return m, out, binary


def _run(binary, *args):
    return subprocess.run([str(binary), *map(str, args)], capture_output=True, encoding="utf-8",
                          errors="replace", timeout=60)


def test_runner_greedy_tokens_equal_jax(exported):
    m, out, binary = exported
    lengths = []
    for prompt in ["It was the best of times", "def add(a, b):", "The quick brown"]:
        ids = m.encode(prompt)
        expected = greedy_ids(m, ids, 24, stop_ids=m.eos_ids[:1])  # run.c stops at the file's eos
        result = _run(binary, out / "model.bin", "-i", " ".join(map(str, ids)), "-n", 24, "-q")
        assert result.returncode == 0, result.stderr
        got = [int(t) for t in result.stdout.split()]
        assert got == expected, prompt
        lengths.append(len(got))
    assert max(lengths) == 24  # not all stopped at once
    # Text in and out: the runner encodes and prints text (ids may differ from tiktoken's at
    # word boundaries, as its usage says, so only check that it produces text).
    result = _run(binary, out / "model.bin", "-p", "It was the", "-n", 8)
    assert result.returncode == 0 and result.stdout.strip(), result.stderr


def test_params_file_round_trips_through_infer_load(exported):
    import infer

    m, out, _ = exported
    back = infer.load(out / "model.bin")
    ids = m.encode("It was the age of wisdom")
    assert np.array_equal(back.logits(ids), m.logits(ids))
    assert back.encode("naïve café 42") == m.encode("naïve café 42")
    assert back.bos_id == m.bos_id and back.add_bos


def test_bad_params_files_are_refused(exported, tmp_path):
    import infer

    m, out, binary = exported
    data = (out / "model.bin").read_bytes()
    truncated = tmp_path / "truncated.bin"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(TwofilesError, match="truncated.bin.*(truncated|corrupted)"):
        infer.load(truncated)
    result = _run(binary, truncated, "-i", "1 2", "-n", 2)
    assert result.returncode != 0 and "run:" in result.stderr
    with pytest.raises(ExportError, match="already exists"):
        export(m, "twofiles", out)
