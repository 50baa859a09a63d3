"""What an export may touch: only its own files. `--force` replaces an earlier export and
nothing else; a directory holding other files is refused, naming them; a failed export leaves
the previous one intact and no temporary files; errors name the user's path."""

import errno
import os
import subprocess
import sys

import pytest

from infer.formats import export as export_mod
from infer.formats import export_gguf, export_safetensors
from infer.formats.export import ExportError, export
from tests.test_export_common import tiny_twofiles_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DIRECTORY_FORMATS = {"safetensors": ("model.safetensors", "config.json",
                                     "generation_config.json", "tokenizer.json",
                                     "tokenizer_config.json"),
                     "twofiles": ("model.bin", "run.c")}


def _contents(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("fmt", sorted(DIRECTORY_FORMATS))
def test_force_refuses_a_directory_holding_a_users_files(tmp_path, fmt):
    """The issue's case: `--out ../that-folder --force` must not wipe the folder."""
    folder = tmp_path / "that-folder"
    folder.mkdir()
    (folder / "notes.txt").write_text("my own notes")
    (folder / "config.json").write_text("{}")  # one of the export's names: still refused
    before = _contents(folder)
    with pytest.raises(ExportError, match=r"notes\.txt.*choose an empty or new --out"):
        export(tiny_twofiles_model(), fmt, folder, force=True)
    assert _contents(folder) == before


@pytest.mark.parametrize("fmt", sorted(DIRECTORY_FORMATS))
def test_force_replaces_an_earlier_export_and_only_its_files(tmp_path, fmt):
    out = tmp_path / "out"
    (tmp_path / "beside.txt").write_text("a user's file next to the export")
    paths = export(tiny_twofiles_model(), fmt, out)
    assert sorted(p.name for p in paths) == sorted(DIRECTORY_FORMATS[fmt])
    first = _contents(out)
    with pytest.raises(ExportError, match="already exists and holds an export.*--force"):
        export(tiny_twofiles_model(seed=1), fmt, out)
    assert _contents(out) == first
    export(tiny_twofiles_model(seed=1), fmt, out, force=True)
    again = _contents(out)
    assert sorted(again) == sorted(DIRECTORY_FORMATS[fmt])  # no temporary files left
    assert again != first  # the new weights replaced the old
    assert (tmp_path / "beside.txt").read_text() == "a user's file next to the export"
    empty = tmp_path / "empty"
    empty.mkdir()
    export(tiny_twofiles_model(), fmt, empty)  # an empty directory needs no --force
    assert _contents(empty) == first


def test_gguf_force_replaces_only_an_earlier_gguf(tmp_path):
    path, notes = tmp_path / "model.gguf", tmp_path / "notes.gguf"
    (tmp_path / "beside.txt").write_text("mine")
    export(tiny_twofiles_model(), "gguf", path, dtype="f32")
    export(tiny_twofiles_model(seed=1), "gguf", path, dtype="f32", force=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["beside.txt", "model.gguf"]
    notes.write_text("not a model")
    with pytest.raises(ExportError, match="is not a GGUF file; --force replaces only"):
        export(tiny_twofiles_model(), "gguf", notes, force=True)
    assert notes.read_text() == "not a model"
    with pytest.raises(ExportError, match="is a directory"):
        export(tiny_twofiles_model(), "gguf", tmp_path, force=True)


def _disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize("fmt,module,name", [
    ("gguf", export_gguf, "_add_tensor"),
    ("safetensors", export_safetensors, "write_tokenizer_json"),
    ("twofiles", export_mod.shutil, "copyfile"),
])
def test_a_failed_export_leaves_the_previous_one_and_no_temporary_files(
        tmp_path, monkeypatch, fmt, module, name):
    out = tmp_path / ("model.gguf" if fmt == "gguf" else "out")
    export(tiny_twofiles_model(), fmt, out, **({"dtype": "f32"} if fmt == "gguf" else {}))
    before = _contents(tmp_path)
    monkeypatch.setattr(module, name, _disk_full)
    with pytest.raises(ExportError) as e:
        export(tiny_twofiles_model(seed=1), fmt, out, force=True)
    assert f"cannot write {out}" in str(e.value) and "No space left" in str(e.value)
    assert ".tmp" not in str(e.value)
    assert _contents(tmp_path) == before


def test_a_failed_export_to_a_new_directory_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(export_mod.shutil, "copyfile", _disk_full)
    with pytest.raises(ExportError):
        export(tiny_twofiles_model(), "twofiles", tmp_path / "new")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(not os.path.isdir("/sys"), reason="needs an unwritable /sys")
@pytest.mark.parametrize("fmt,out", [("gguf", "/sys/model.gguf"), ("twofiles", "/sys/two")])
def test_an_unwritable_path_is_named_not_a_temporary_file(fmt, out):
    with pytest.raises(ExportError) as e:
        export(tiny_twofiles_model(), fmt, out)
    assert f"cannot write {out}" in str(e.value) and ".tmp" not in str(e.value)


def test_dtype_is_refused_for_float32_formats(tmp_path):
    with pytest.raises(ExportError, match="--dtype q8_0 applies to GGUF exports only"):
        export(tiny_twofiles_model(), "safetensors", tmp_path / "st", dtype="q8_0")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_cli_refusals_are_one_line(tmp_path):
    src = tmp_path / "src"
    export(tiny_twofiles_model(), "twofiles", src)
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "thesis.tex").write_text("years of work")
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="")
    for args, expected in [
            (["--format", "safetensors", "--out", folder, "--force"], "thesis.tex"),
            (["--format", "safetensors", "--out", tmp_path / "st", "--dtype", "f16"],
             "--dtype f16 applies to GGUF exports only")]:
        proc = subprocess.run([sys.executable, "-m", "infer", "export", "--model", str(src),
                               *map(str, args)], capture_output=True, text=True, cwd=ROOT,
                              env=env, timeout=300)
        assert proc.returncode == 2 and expected in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert (folder / "thesis.tex").read_text() == "years of work"
    assert not (tmp_path / "st").exists()
