"""A trained twofiles run: infer.load reads the run directory and a checkpoint directory, and
`python -m infer export` turns it into a GGUF that llama.cpp runs with the same greedy tokens."""

import subprocess
import sys

import numpy as np
import pytest

from tests.test_export_gguf import _llama, _llama_greedy
from tests.test_export_common import greedy_ids
from tests.train_helpers import config_dict, prepare_small_demo

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from train import config as train_config, pretrain

    data = prepare_small_demo(tmp_path_factory.mktemp("data"), max_docs=2)
    cfg = train_config.from_dict(config_dict(data, steps=4, eval_every=4, checkpoint_every=2,
                                             log_every=2, data__eval_batches=1,
                                             optim__warmup_steps=1))
    out = tmp_path_factory.mktemp("run") / "out"
    pretrain.run(cfg, out, progress=False)
    return out


def test_load_run_and_checkpoint(run_dir):
    import infer
    from infer.chat import render as chat
    from infer.formats import run_checkpoint
    from train import tokenizer

    m = infer.load(run_dir)
    cfg, params, tok_doc, _ = run_checkpoint.load_params(run_dir)
    assert m.kind == "twofiles" and m.config.n_layers == cfg.n_layers
    assert tokenizer.fingerprint(m.tokenizer) == tok_doc["fingerprint"]
    ids = m.encode("To be, or not to be")
    assert ids[0] == tokenizer.bos_id(m.tokenizer)
    import model

    expected = np.asarray(model.forward(params, np.asarray([ids]), cfg)[0][0])
    np.testing.assert_allclose(m.logits(ids), expected, atol=1e-5)
    early = infer.load(run_dir / "checkpoints" / "2")
    assert not np.allclose(early.logits(ids), m.logits(ids))  # really the step-2 weights
    messages = [{"role": "user", "content": "Who art thou?"}]
    from infer.runtime import engine

    assert engine.prompt_ids(m, messages, chat=True) == chat.render(
        m.tokenizer, messages, add_generation_prompt=True)[0]


def test_export_run_to_gguf_runs_in_llama_cpp(run_dir, tmp_path):
    import infer

    out = tmp_path / "run.gguf"
    result = subprocess.run([sys.executable, "-m", "infer", "export", "--model", str(run_dir),
                             "--format", "gguf", "--out", str(out), "--dtype", "f32"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    m = infer.load(run_dir)
    ids = m.encode("To be, or not to be")
    steps = min(12, m.config.max_seq_len - len(ids))
    assert _llama_greedy(_llama(out), ids, steps) == greedy_ids(m, ids, steps)
