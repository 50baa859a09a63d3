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
from infer.formats.out_files import ExportError, check_dir, check_file, staged

FORMATS = ("gguf", "safetensors", "twofiles")
# The files each directory format writes, and the only ones `--force` may replace.
SAFETENSORS_FILES = ("model.safetensors", "config.json", "generation_config.json",
                     "tokenizer.json", "tokenizer_config.json")
TWOFILES_FILES = ("model.bin", "run.c")
TWOFILES_COMPANIONS = ("run",)  # the runner compiled as the export command suggests; kept


def chat_template_for(m) -> str | None:
    if m.chat_template:
        return m.chat_template
    if "<|assistant_start|>" in m.tokenizer.special_tokens_set:
        return TWOFILES_CHAT_TEMPLATE
    return None


def recommended_sampling(m) -> dict | None:
    """The sampling settings the model's source recommends (infer.runtime.sampling_defaults),
    carried into the export so that it recommends them too; None for the generic default."""
    from infer.runtime import sampling_defaults

    found = sampling_defaults.for_model(m)
    return None if found == sampling_defaults.GENERIC else found.settings()


def export(m, fmt: str, out, *, dtype: str | None = None, force: bool = False) -> list[Path]:
    """Writes `m` (an infer.Model) to `out`; returns the paths written.

    gguf: one file, dtype f32, f16 (the default) or q8_0. safetensors: a directory (float32).
    twofiles: a directory with model.bin (float32) and run.c. An existing `out` is replaced
    only with `force`, and only if it holds nothing but an earlier export's files (see
    infer/formats/out_files.py); every file is written whole or not at all.
    """
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if dtype is not None and fmt != "gguf":
        raise ExportError(f"--dtype {dtype} applies to GGUF exports only; a {fmt} export is "
                          "always float32: drop --dtype")
    out = Path(out)
    template = chat_template_for(m)
    sampling = recommended_sampling(m)
    if fmt == "gguf":
        from infer.formats import export_gguf

        check_file(out, force=force, magic=b"GGUF", kind="GGUF")
        export_gguf.check_exportable(m, dtype or "f16", str(out))
        with staged(out.parent, [out.name]) as tmp:
            export_gguf.write_gguf(m, tmp[out.name], dtype=dtype or "f16",
                                   chat_template=template, sampling=sampling)
        return [out]
    if fmt == "safetensors":
        from infer.formats.export_safetensors import write_safetensors_dir

        check_dir(out, SAFETENSORS_FILES, force=force)
        with staged(out, SAFETENSORS_FILES) as tmp:
            write_safetensors_dir(m, tmp, chat_template=template, sampling=sampling)
        return [out / name for name in SAFETENSORS_FILES]
    check_dir(out, TWOFILES_FILES, force=force, companions=TWOFILES_COMPANIONS)
    with staged(out, TWOFILES_FILES) as tmp:
        write_two_files(m, tmp)
    return [out / name for name in TWOFILES_FILES]


def write_two_files(m, paths: dict[str, Path]) -> None:
    """paths["model.bin"] (infer/formats/twofiles_format.py documents it) and paths["run.c"]
    (its runner)."""
    from infer.formats import twofiles_format

    twofiles_format.write(paths["model.bin"], m.config, m.params, m.tokenizer, bos_id=m.bos_id,
                          eos_id=m.eos_ids[0] if m.eos_ids else None, add_bos=m.add_bos)
    shutil.copyfile(twofiles_format.RUNNER, paths["run.c"])
