"""llama.cpp (llama-cpp-python) as the tests' peer, without its repacked weight buffers.

On CPUs with AMX (Intel Sapphire Rapids and later), llama.cpp repacks quantised weights into
"extra" buffer types for its AMX kernels; with the tiny test models' matrices (width 32) that
path segfaults inside llama.cpp (q8_0, seen with llama-cpp-python 0.3.36). The Python binding
does not expose `use_extra_bufts`, so the default model parameters it reads are wrapped for the
duration of the load. The plain CPU kernels still compute every product.
"""

from __future__ import annotations

import contextlib


@contextlib.contextmanager
def _no_extra_buffers():
    import llama_cpp
    import llama_cpp.llama as binding

    default = llama_cpp.llama_model_default_params

    def params():
        p = default()
        p.use_extra_bufts = False
        return p

    binding.llama_cpp.llama_model_default_params = params
    try:
        yield
    finally:
        binding.llama_cpp.llama_model_default_params = default


def load(path, **kwargs):
    """`llama_cpp.Llama(path, **kwargs)` with llama.cpp's plain CPU weight buffers."""
    from llama_cpp import Llama

    with _no_extra_buffers():
        return Llama(str(path), **kwargs)
