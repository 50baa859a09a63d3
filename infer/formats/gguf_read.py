"""Reads a GGUF file into plain Python metadata and float32 numpy tensors, or says what is wrong.

The `gguf` package (llama.cpp's own reader) parses the file and dequantises its tensors. Around
it this module checks what the package assumes: the magic and version, that every tensor lies
inside the file, that shapes and types make sense, so that a truncated or corrupted file gets one
`GGUFError` naming the file and the problem instead of an exception from deep inside numpy.
"""

from __future__ import annotations

import os
import struct

import numpy as np

SUPPORTED_VERSIONS = (2, 3)
# Types we dequantise (everything the gguf package implements in numpy for real checkpoints).
SUPPORTED_TYPES = ("F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K",
                   "Q4_K", "Q5_K", "Q6_K")


class GGUFError(ValueError):
    """A GGUF file is malformed or unsupported; the message names the file and the problem."""


def _fail(path, problem: str) -> GGUFError:
    return GGUFError(f"{path}: {problem}")


def check_header(path) -> None:
    """Cheap checks before the full parse: file exists, magic, version, plausible counts."""
    if not os.path.isfile(path):
        raise _fail(path, "no such GGUF file")
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(24)
    if len(head) < 24:
        raise _fail(path, f"file is {size} bytes, too short for a GGUF header (24 bytes)")
    if head[:4] != b"GGUF":
        raise _fail(path, f"not a GGUF file (magic {head[:4]!r}, expected b'GGUF')")
    version, n_tensors, n_kv = struct.unpack("<IQQ", head[4:24])
    if version not in SUPPORTED_VERSIONS:
        raise _fail(path, f"GGUF version {version} is not supported (supported: "
                          f"{SUPPORTED_VERSIONS}); the file may be big-endian or corrupted")
    # Each tensor info takes at least 8+4+8+4+8 bytes, each key/value at least 8+4+1+...
    if n_tensors * 32 > size or n_kv * 13 > size:
        raise _fail(path, f"header claims {n_tensors} tensors and {n_kv} metadata keys, more "
                          f"than a {size}-byte file can hold (truncated or corrupted)")


def _reader_class():
    import gguf

    class PlainArrayReader(gguf.GGUFReader):
        """GGUFReader over a plain ndarray view of its memory map: parsing slices the map once
        per value, and slicing np.memmap objects is ~3x slower than slicing ndarrays (SmolLM2's
        49k-token vocabulary parses in seconds instead of ten)."""

        @property
        def data(self):
            return self._plain_data

        @data.setter
        def data(self, value):
            self._plain_data = value.view(np.ndarray)

    return PlainArrayReader


def open_reader(path):
    """A gguf.GGUFReader over `path`, with any parse failure reported as a GGUFError."""
    check_header(path)
    try:
        reader = _reader_class()(path, "r")
    except GGUFError:
        raise
    except Exception as e:  # the package raises ValueError, IndexError, struct.error, ...
        raise _fail(path, f"malformed GGUF file (truncated or corrupted?): "
                          f"{type(e).__name__}: {e}") from None
    size = os.path.getsize(path)
    for t in reader.tensors:
        end = int(t.data_offset) + int(t.n_bytes)
        if int(t.data_offset) < 0 or end > size:
            raise _fail(path, f"tensor {t.name!r} ends at byte {end}, past the end of the "
                              f"{size}-byte file (truncated?)")
    return reader


def field_value(field):
    """A reader field as a Python value: str, int, float, bool or a list of them."""
    import gguf

    types = list(field.types)
    if not types:
        return None
    if types[0] == gguf.GGUFValueType.ARRAY:
        item = types[1] if len(types) > 1 else None
        values = [field.parts[i] for i in field.data]
        if item == gguf.GGUFValueType.STRING:
            return [bytes(v).decode("utf-8", errors="replace") for v in values]
        return [_scalar(v) for v in values]
    part = field.parts[field.data[0]]
    if types[0] == gguf.GGUFValueType.STRING:
        return bytes(part).decode("utf-8", errors="replace")
    return _scalar(part)


def _scalar(part):
    value = part.tolist()
    if isinstance(value, list):
        value = value[0] if len(value) == 1 else value
    return value


def read_metadata(reader, path) -> dict:
    """All key/value pairs (tensor data excluded) as Python values."""
    meta = {}
    for name, field in reader.fields.items():
        if name.startswith("GGUF."):  # the reader's own header pseudo-fields
            continue
        try:
            meta[name] = field_value(field)
        except Exception as e:
            raise _fail(path, f"metadata key {name!r} is malformed: {type(e).__name__}: {e}") \
                from None
    return meta


def read_tensor(reader, tensor, path) -> np.ndarray:
    """One tensor dequantised to float32, in numpy (row-major) orientation: GGUF lists dims
    fastest first, so a [D, V] GGUF embedding is a [V, D] array."""
    import gguf

    try:
        qtype = gguf.GGMLQuantizationType(int(tensor.tensor_type))
    except ValueError:
        raise _fail(path, f"tensor {tensor.name!r} has unknown type id "
                          f"{int(tensor.tensor_type)}") from None
    if qtype.name not in SUPPORTED_TYPES:
        raise _fail(path, f"tensor {tensor.name!r} has type {qtype.name}, not supported "
                          f"(supported: {', '.join(SUPPORTED_TYPES)})")
    shape = tuple(int(d) for d in reversed(list(tensor.shape)))
    n = int(np.prod(shape, dtype=np.int64))
    if any(d <= 0 for d in shape) or n != int(tensor.n_elements):
        raise _fail(path, f"tensor {tensor.name!r} has inconsistent shape {shape}")
    try:
        values = gguf.quants.dequantize(np.asarray(tensor.data), qtype)
        return np.asarray(values, dtype=np.float32).reshape(shape)
    except Exception as e:
        raise _fail(path, f"tensor {tensor.name!r} ({qtype.name}, shape {shape}) cannot be "
                          f"decoded: {type(e).__name__}: {e}") from None
