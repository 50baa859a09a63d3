"""Every weight type we dequantise, in files written by llama.cpp's own quantiser: infer.load
agrees with transformers' GGUF loader (same file, both float32) and with llama.cpp's forward."""

import ctypes

import jax
import numpy as np
import pytest

import model
from infer.formats.export import export
from tests.test_export_common import tiny_twofiles_model
from tests.test_export_gguf import PROMPT, _llama

# llama.cpp file types -> tensor types they put in the file (mixes cover Q3_K and Q6_K too)
FILE_TYPES = {"Q4_0": {"Q4_0"}, "Q4_1": {"Q4_1"}, "Q5_1": {"Q5_1"}, "Q2_K": {"Q2_K", "Q3_K"},
              "Q4_K_M": {"Q4_K", "Q6_K"}, "Q5_K_M": {"Q5_K"}, "BF16": {"BF16"}}


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A float32 GGUF of a model whose rows split into K-quant blocks (256 values)."""
    from infer.load_model import Model, twofiles_fields

    base = tiny_twofiles_model()
    cfg = model.apply_overrides(base.config, ["d_model=256", "d_ff=512"])
    params = jax.tree.map(np.asarray, model.init(cfg, jax.random.key(0)))
    params["embed"] = params["embed"] * 10.0  # logits of a few tens, not near-uniform
    m = Model(source="k", kind="twofiles", **twofiles_fields(cfg, params, base.tokenizer))
    path = tmp_path_factory.mktemp("quant") / "f32.gguf"
    export(m, "gguf", path, dtype="f32")
    return m, path


def _quantize(src, dst, file_type: str) -> None:
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{file_type}")
    assert llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(),
                                          ctypes.byref(params)) == 0


@pytest.mark.parametrize("file_type", list(FILE_TYPES))
def test_dequantised_weights_match_transformers_and_llama_cpp(source, file_type):
    import gguf
    import torch
    from transformers import AutoModelForCausalLM

    import infer

    m, src = source
    path = src.with_name(f"{file_type}.gguf")
    _quantize(src, path, file_type)
    types = {gguf.GGMLQuantizationType(int(t.tensor_type)).name
             for t in gguf.GGUFReader(path).tensors}
    assert FILE_TYPES[file_type] <= types

    ours = infer.load(path)
    ids = m.encode(PROMPT)
    got = ours.logits(ids)
    hf = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name,
                                              dtype=torch.float32).eval()
    with torch.no_grad():
        expected = hf(torch.tensor([ids])).logits[0].numpy()
    assert float(np.abs(got - expected).max()) <= 1e-4
    llm = _llama(path)
    llm.eval(ids)
    scale = float(np.abs(got).max())
    # llama.cpp multiplies quantised weights by 8-bit-quantised activations: close, not equal.
    assert float(np.abs(np.array(llm.scores[:len(ids)]) - got).max()) <= 0.01 * scale
