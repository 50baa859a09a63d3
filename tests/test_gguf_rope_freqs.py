"""A GGUF carrying `rope_freqs.weight` (Llama 3 rope scaling) is refused, not loaded with plain
rotary embeddings and silently wrong logits."""

import gguf
import numpy as np
import pytest

from infer.formats.export import export
from infer.formats.gguf_load import load_gguf
from infer.formats.gguf_read import GGUFError
from tests.test_export_common import tiny_twofiles_model


class _WithRopeFreqs(gguf.GGUFWriter):
    """The exporter's writer, plus the per-frequency factors llama.cpp's converter writes for
    Llama 3.1 (one per rotary pair of a head)."""

    def write_header_to_file(self, *args, **kwargs):
        half_head = tiny_twofiles_model().config.head_dim // 2
        self.add_tensor("rope_freqs.weight", np.linspace(1.0, 8.0, half_head, dtype=np.float32))
        return super().write_header_to_file(*args, **kwargs)


def test_rope_freqs_tensor_is_refused(tmp_path, monkeypatch):
    plain, scaled = tmp_path / "plain.gguf", tmp_path / "scaled.gguf"
    export(tiny_twofiles_model(), "gguf", plain, dtype="f32")
    load_gguf(plain)  # the same file without the tensor loads
    monkeypatch.setattr(gguf, "GGUFWriter", _WithRopeFreqs)
    export(tiny_twofiles_model(), "gguf", scaled, dtype="f32")
    assert "rope_freqs.weight" in {t.name for t in gguf.GGUFReader(scaled).tensors}
    with pytest.raises(GGUFError, match=r"scaled\.gguf: tensor 'rope_freqs.weight' .*not "
                                        r"supported"):
        load_gguf(scaled)
