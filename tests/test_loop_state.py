"""A training state started from what `infer.load` reads: its step-0 loss is the loaded model's
own forward loss, for a twofiles run and for the GGUF exported from it."""

import jax
import numpy as np
import optax
import pytest

import infer
from tests.train_helpers import config_dict, one_device_mesh, prepare_small_demo
from train import config as train_config
from train import losses, pretrain
from train import state as state_lib
from train.loader import Loader
from train.step import make_step


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("state")
    data_dir = prepare_small_demo(root / "data")
    cfg = train_config.from_dict(config_dict(data_dir, steps=6, eval_every=0,
                                             checkpoint_every=6, optim__warmup_steps=2))
    out = root / "run"
    pretrain.run(cfg, out, progress=False)
    from infer.formats.export import export
    gguf = root / "model.gguf"
    export(infer.load(out), "gguf", gguf, dtype="f32")
    return {"run": out, "gguf": gguf, "data": data_dir, "cfg": cfg}


def forward_loss(m, batch) -> float:
    """Mean next-token loss from the loaded model's own logits, in numpy."""
    total, n = 0.0, 0
    for inputs, targets in zip(np.asarray(batch["inputs"]), np.asarray(batch["targets"])):
        logits = m.logits(inputs).astype(np.float64)
        logits -= logits.max(-1, keepdims=True)
        logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
        total -= logp[np.arange(len(targets)), targets].sum()
        n += len(targets)
    return total / n


@pytest.mark.parametrize("source", ["run", "gguf"])
def test_step_zero_loss_is_the_loaded_models_forward_loss(trained, source):
    mesh = one_device_mesh()
    loaded, params = state_lib.load_params(trained[source], mesh)
    cfg = trained["cfg"]
    batch = next(Loader(trained["data"], "val", cfg.seq_len, 4, mesh=mesh, shuffle=False))
    optimizer = optax.adam(1e-3)
    abstract = state_lib.abstract_params(loaded.config, mesh)
    state = state_lib.fresh(params, optimizer, abstract, mesh)
    assert int(state["step"]) == 0
    assert all(not np.asarray(x).any() for x in jax.tree.leaves(state["opt_state"])
               if np.ndim(x) > 0)  # a fresh optimizer: no moments carried over
    step = make_step(losses.next_token_loss(loaded.config), optimizer,
                     state_lib.state_shardings(abstract, optimizer, mesh), mesh, donate=False)
    _, metrics = step(state, batch)
    assert float(metrics["loss"]) == pytest.approx(forward_loss(loaded, batch), rel=1e-5)


def test_parameters_of_another_layout_are_refused(trained):
    mesh = one_device_mesh()
    loaded = infer.load(trained["run"])
    other = state_lib.abstract_params(
        train_config.apply_overrides(trained["cfg"], ["model.n_layers=3"]).model, mesh)
    with pytest.raises(ValueError, match="parameter has shape"):
        state_lib.place(loaded.params, other, "the base")
