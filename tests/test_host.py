"""train.host: what "auto" compute dtype means on a host, and that configs resolve it on load."""

import json

import pytest

from train import config, host

AMX = "processor\t: 0\nflags\t\t: fpu sse2 avx2 fma avx512f avx512_bf16 amx_bf16 amx_tile\n"
ZEN4 = "processor\t: 0\nflags\t\t: fpu sse2 avx2 fma avx512f avx512_bf16 avx512_vnni\n"
AVX2 = "processor\t: 0\nflags\t\t: fpu sse2 avx2 fma f16c\n"


def test_auto_dtype_is_bf16_only_where_the_cpu_has_bf16_dots_or_an_accelerator_is_attached():
    assert host.auto_compute_dtype(AMX, accelerator=False) == "bfloat16"
    assert host.auto_compute_dtype(ZEN4, accelerator=False) == "bfloat16"
    assert host.auto_compute_dtype(AVX2, accelerator=False) == "float32"
    assert host.auto_compute_dtype("", accelerator=False) == "float32"
    assert host.auto_compute_dtype(AVX2, accelerator=True) == "bfloat16"


def test_cpu_flags_reads_the_flags_line_only():
    assert host.cpu_flags(AVX2) == {"fpu", "sse2", "avx2", "fma", "f16c"}


@pytest.mark.parametrize("resolved", ["bfloat16", "float32"])
def test_a_config_names_the_dtype_auto_resolved_to(monkeypatch, tmp_path, resolved):
    monkeypatch.setattr(host, "auto_compute_dtype", lambda: resolved)
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"model": {"preset": "demo", "compute_dtype": "auto"}}))
    cfg = config.load(str(path))
    assert cfg.model.compute_dtype == resolved
    assert cfg.to_dict()["model"]["compute_dtype"] == resolved  # what config.json will hold
    over = config.apply_overrides(config.load("tiny"), ["model.compute_dtype=auto"])
    assert over.model.compute_dtype == resolved
    kept = config.apply_overrides(config.load("tiny"), ["model.compute_dtype=float32"])
    assert kept.model.compute_dtype == "float32"
