"""Run records: one row per training run (N, D, C, final validation loss), as CSV or JSON.

The common input is a CSV with columns `params,tokens,loss` (optional `flops`,
`non_embedding_params`, `budget`, `name`). When `tokens` is absent but `flops` is present,
D = C / (6 N), the convention of Chinchilla's published points. Every value is checked before
anything is fitted: a bad row is named by file and line, not found three layers down.
"""
from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import tempfile
from typing import Iterable, Sequence

import numpy as np

from scaling.law import FLOPS_PER_PARAM_TOKEN

NUMERIC = ("params", "non_embedding_params", "tokens", "flops", "flops_6nd", "loss", "budget",
           "wall_s")
CSV_COLUMNS = ("name",) + NUMERIC


@dataclasses.dataclass(frozen=True)
class RunRecord:
    """One finished run. `flops` is the exact training FLOPs from `model.flops_per_token`."""

    params: float                      # N, total parameters (embeddings included)
    tokens: float                      # D, training tokens
    loss: float                        # final validation loss, nats per token
    flops: float | None = None         # C, exact training FLOPs (None when unknown)
    non_embedding_params: float | None = None
    budget: float | None = None        # nominal IsoFLOP budget the run was planned for
    name: str = ""
    wall_s: float | None = None
    config: dict | None = None         # the resolved training config (JSON only)

    @property
    def flops_6nd(self) -> float:
        return FLOPS_PER_PARAM_TOKEN * self.params * self.tokens

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["flops_6nd"] = self.flops_6nd
        return d


class RecordError(ValueError):
    """Bad run records: the message names the source and the offending value."""


def _number(value, column: str, where: str, *, optional: bool) -> float | None:
    if value is None or (isinstance(value, str) and value.strip() == ""):
        if optional:
            return None
        raise RecordError(f"{where}: missing value for '{column}'")
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise RecordError(f"{where}: '{column}' must be a number, got {value!r}") from None
    if not math.isfinite(x) or x <= 0:
        raise RecordError(f"{where}: '{column}' must be positive and finite, got {value!r}")
    return x


def record_from_mapping(row: dict, where: str) -> RunRecord:
    """Validate one row (from CSV or JSON) into a RunRecord."""
    params = _number(row.get("params"), "params", where, optional=False)
    loss = _number(row.get("loss"), "loss", where, optional=False)
    flops = _number(row.get("flops"), "flops", where, optional=True)
    tokens = _number(row.get("tokens"), "tokens", where, optional=flops is not None)
    if tokens is None:
        tokens = flops / (FLOPS_PER_PARAM_TOKEN * params)
    opt = {k: _number(row.get(k), k, where, optional=True)
           for k in ("non_embedding_params", "budget", "wall_s")}
    config = row.get("config") if isinstance(row.get("config"), dict) else None
    return RunRecord(params=params, tokens=tokens, loss=loss, flops=flops,
                     name=str(row.get("name") or ""), config=config, **opt)


def read_csv(path: str, *, rename: dict | None = None) -> list[RunRecord]:
    """Read run records from CSV. `rename` maps our column names to the file's
    (e.g. {"params": "Model Size", "flops": "Training FLOP"} for Epoch AI's file)."""
    rename = rename or {}
    if not os.path.isfile(path):
        raise RecordError(f"{path}: no such file (expected a CSV with columns params,tokens,loss)")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        cols = {ours: rename.get(ours, ours) for ours in CSV_COLUMNS}
        need = ["params", "loss"] + ([] if cols["flops"] in header else ["tokens"])
        missing = [cols[c] for c in need if cols[c] not in header]
        if missing:
            raise RecordError(
                f"{path}: missing column(s) {missing}; expected params,tokens,loss "
                f"(or params,flops,loss), found {header}")
        rows = [record_from_mapping({ours: row.get(theirs) for ours, theirs in cols.items()},
                                    f"{path} line {i + 2}")
                for i, row in enumerate(reader)]
    if not rows:
        raise RecordError(f"{path}: no data rows")
    return rows


def read_json(path: str) -> list[RunRecord]:
    """Read records written by `write_json` (a list of objects, or {"runs": [...]})."""
    with open(path) as f:
        data = json.load(f)
    rows = data["runs"] if isinstance(data, dict) and "runs" in data else data
    if not isinstance(rows, list) or not rows:
        raise RecordError(f"{path}: expected a non-empty list of runs")
    return [record_from_mapping(r, f"{path} run {i}") for i, r in enumerate(rows)]


def read(path: str, *, rename: dict | None = None) -> list[RunRecord]:
    return read_json(path) if path.endswith(".json") else read_csv(path, rename=rename)


def _atomic_write(path: str, write) -> None:
    d = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(d, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-", suffix=os.path.basename(path))
    except OSError as e:  # name the user's path, not the temporary one
        raise OSError(e.errno, f"cannot write {path}: {e.strerror}") from None
    try:
        with os.fdopen(fd, "w", newline="") as f:
            write(f)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def write_csv(path: str, records: Sequence[RunRecord]) -> None:
    def write(f):
        w = csv.DictWriter(f, fieldnames=CSV_COLUMNS, extrasaction="ignore")
        w.writeheader()
        for r in records:
            w.writerow({k: ("" if v is None else v) for k, v in r.to_dict().items()})
    _atomic_write(path, write)


def write_json(path: str, obj) -> None:
    """Atomically write JSON (records as {"runs": [...]}, or any JSON-serialisable object)."""
    if isinstance(obj, (list, tuple)) and obj and isinstance(obj[0], RunRecord):
        obj = {"runs": [r.to_dict() for r in obj]}
    _atomic_write(path, lambda f: json.dump(obj, f, indent=2, default=_jsonable))


def _jsonable(x):
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    raise TypeError(f"not JSON-serialisable: {type(x)}")


def arrays(records: Iterable[RunRecord], *, min_points: int = 5):
    """(N, D, L) as float64 arrays, refusing too few points to identify the fit."""
    records = list(records)
    if len(records) < min_points:
        raise RecordError(
            f"{len(records)} run(s) given; a fit of {min_points} parameters needs at least "
            f"{min_points}")
    n = np.array([r.params for r in records], np.float64)
    d = np.array([r.tokens for r in records], np.float64)
    loss = np.array([r.loss for r in records], np.float64)
    for values, what, term in ((n, "model size N", "A/N^alpha"), (d, "token count D",
                                                                 "B/D^beta")):
        if len(np.unique(values)) < 2:
            # The term's coefficient and exponent are then free: any value fits equally, and
            # the optimiser reports one of them as converged, with zero-width intervals.
            raise RecordError(
                f"all {len(records)} runs have the same {what} ({values[0]:.6g}), so {term} "
                f"cannot be fitted; add runs of at least two (better: several) {what}s, e.g. "
                "an IsoFLOP sweep (python -m scaling sweep)")
    return n, d, loss


def compute_of(r: RunRecord) -> float:
    """The run's compute: exact FLOPs when recorded, else 6ND."""
    return r.flops if r.flops is not None else r.flops_6nd
