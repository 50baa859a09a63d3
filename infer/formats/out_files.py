"""Writing an export's files without touching anyone else's.

An export owns a fixed set of file names (one GGUF file; the files of a safetensors or twofiles
directory). `check_file` and `check_dir` decide, before anything is written, whether `--out`
may be used: a new path always; an existing one only with `force`, and only when everything in
it is the export's own (a directory holding other files is refused, naming them). `staged` then
writes every file under a temporary name in its final directory and renames them all into place
at the end, so a failed export leaves the previous one intact and no temporary files behind.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator, Sequence


class ExportError(ValueError):
    """The export cannot be done as asked; the message says why."""


def check_file(out: Path, *, force: bool, magic: bytes, kind: str) -> None:
    """A single-file export to `out`: refused if `out` exists and replacing it was not asked
    for, or it is not an earlier export (its first bytes are not `magic`)."""
    _check_parent(out)
    if not (out.exists() or out.is_symlink()):
        return
    if out.is_dir():
        raise ExportError(f"{out} is a directory; a {kind} export is one file: give a file path")
    if not force:
        raise ExportError(f"{out} already exists; choose another --out or pass --force")
    with open(out, "rb") as f:
        head = f.read(len(magic))
    if head != magic:
        raise ExportError(f"{out} is not a {kind} file; --force replaces only an earlier "
                          f"{kind} export, never other files: choose another --out")


def check_dir(out: Path, names: Sequence[str], *, force: bool,
              companions: Sequence[str] = ()) -> None:
    """A directory export of the files `names` into `out`: refused if `out` is a file, holds
    files that are neither the export's own nor its `companions` (files a user makes from it,
    such as the compiled runner, left as they are), or holds earlier ones and `force` was not
    given. An existing empty directory is used as is."""
    _check_parent(out)
    if not (out.exists() or out.is_symlink()):
        return
    if not out.is_dir():
        raise ExportError(f"{out} already exists and is not a directory; choose another --out")
    present = sorted(p.name for p in out.iterdir())
    foreign = [name for name in present if name not in (*names, *companions)]
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5
                                          else "")
        raise ExportError(f"{out} already exists and holds files that are not this export's "
                          f"({shown}); an export writes only {', '.join(names)} and never "
                          "removes other files: choose an empty or new --out")
    if present and not force:
        raise ExportError(f"{out} already exists and holds an export ({', '.join(present)}); "
                          "choose another --out or pass --force to replace its files")


def _check_parent(out: Path) -> None:
    parent = out.parent
    if not parent.is_dir():
        raise ExportError(f"{parent} (the folder of --out {out}) is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ExportError(f"cannot write {out}: {parent} is not writable")


@contextlib.contextmanager
def staged(directory: Path, names: Sequence[str]) -> Iterator[dict[str, Path]]:
    """Yields {name: temporary path in `directory`}; the caller writes each file there. On a
    clean exit they are renamed onto their names (replacing earlier ones); on any error they
    are removed, and so is `directory` if this created it. OSErrors are reported with the
    final path, never a temporary name."""
    created = False
    temps: dict[str, Path] = {}
    try:
        try:
            if not directory.exists():
                directory.mkdir()
                created = True
            for name in names:
                fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{name}.", suffix=".tmp")
                os.close(fd)
                _usual_permissions(tmp)  # mkstemp makes 0600; an export is a shared file
                temps[name] = Path(tmp)
            yield temps
            for name, tmp in temps.items():
                os.replace(tmp, directory / name)
        except OSError as e:
            target = directory / next(iter(names)) if len(names) == 1 else directory
            raise ExportError(f"cannot write {target}: {e.strerror or e}") from None
    finally:
        for tmp in temps.values():
            tmp.unlink(missing_ok=True)
        if created and not any(directory.iterdir()):
            directory.rmdir()


def _usual_permissions(path: str) -> None:
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)
