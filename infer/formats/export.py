"""`export(model, format, out)`: a loaded model written as GGUF, a Hugging Face safetensors
directory, or the two files (a flat params file and the C runner).

Every format carries the tokenizer and the chat template: a model loaded from a GGUF or HF
directory keeps its own Jinja template; a twofiles model gets TWOFILES_CHAT_TEMPLATE, the
template `infer.chat.render` itself renders twofiles chats with.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from infer.chat.twofiles import TEMPLATE as TWOFILES_CHAT_TEMPLATE  # the one twofiles layout

FORMATS = ("gguf", "safetensors", "twofiles")


class ExportError(ValueError):
    """The export cannot be done as asked; the message says why."""


def chat_template_for(m) -> str | None:
    if m.chat_template:
        return m.chat_template
    if "<|assistant_start|>" in m.tokenizer.special_tokens_set:
        return TWOFILES_CHAT_TEMPLATE
    return None


def export(m, fmt: str, out, *, dtype: str = "f16", force: bool = False) -> list[Path]:
    """Writes `m` (an infer.Model) to `out`; returns the paths written.

    gguf: one file, dtype f32, f16 or q8_0. safetensors: a directory (float32). twofiles: a
    directory with model.bin (float32) and run.c.
    """
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    out = Path(out)
    if out.exists() and not force:
        raise ExportError(f"{out} already exists; choose another --out or pass --force")
    if not out.parent.is_dir():
        raise ExportError(f"{out.parent} is not a directory")
    template = chat_template_for(m)
    if fmt == "gguf":
        from infer.formats import export_gguf

        export_gguf.write_gguf(m, out, dtype=dtype, chat_template=template)
        return [out]
    if fmt == "safetensors":
        from infer.formats.export_safetensors import write_safetensors_dir

        write_safetensors_dir(m, out, chat_template=template)
        return sorted(out.iterdir())
    return write_two_files(m, out)


def write_two_files(m, out_dir) -> list[Path]:
    """OUT/model.bin (infer/formats/twofiles_format.py documents it) and OUT/run.c (its runner)."""
    from infer.formats import twofiles_format

    out_dir = Path(out_dir)
    out_dir.mkdir(exist_ok=True)
    params_path, runner_path = out_dir / "model.bin", out_dir / "run.c"
    twofiles_format.write(params_path, m.config, m.params, m.tokenizer, bos_id=m.bos_id,
                          eos_id=m.eos_ids[0] if m.eos_ids else None, add_bos=m.add_bos)
    shutil.copyfile(twofiles_format.RUNNER, runner_path)
    return [params_path, runner_path]
