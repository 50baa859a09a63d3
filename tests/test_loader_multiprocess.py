"""Two real JAX processes on localhost (4 CPU devices each) build one global batch: each process
reads only its own rows, and together they hold exactly the rows of the single-process batch."""

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from train import corpus, loader, prepare
from train import tokenizer as tk

WORKER = textwrap.dedent("""
    import json, sys
    import jax
    from train import distributed
    distributed.initialize(sys.argv[1], 2, int(sys.argv[2]))
    from model import sharding
    from train import loader
    mesh = sharding.make_mesh(data=-1)
    ld = loader.Loader(sys.argv[3], "train", seq_len=16, global_batch=16, seed=5, mesh=mesh)
    batch = next(ld)
    rows = {}
    for shard in batch["inputs"].addressable_shards:
        for r, row in zip(range(*shard.index[0].indices(16)), shard.data.tolist()):
            rows[r] = row
    print("RESULT " + json.dumps({"shape": list(batch["inputs"].shape),
                                  "devices": jax.device_count(), "rows": rows,
                                  "local": ld.local_batch_at(0)[:, :-1].tolist()}))
""")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_build_one_global_batch(tmp_path):
    plays = list(corpus.limited(corpus.open_source("demo").documents(), 2))
    tk.save(tmp_path / "tok.json", tk.train_tokenizer(plays, 400)[0])
    prepare.prepare("demo", tmp_path / "tok.json", tmp_path / "data", max_docs=2, progress=False)

    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
           "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    address = f"127.0.0.1:{_free_port()}"
    data = str(tmp_path / "data")
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, address, str(p), data], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for p in range(2)]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err[-3000:]
        results.append(json.loads(out.split("RESULT ", 1)[1]))

    single = loader.Loader(tmp_path / "data", "train", seq_len=16, global_batch=16, seed=5)
    expected = single.local_batch_at(0)[:, :-1].tolist()
    held = {}
    for res in results:
        assert res["shape"] == [16, 16] and res["devices"] == 8
        assert len(res["local"]) == 8  # each process read 8 of the 16 rows
        # Its devices hold exactly the rows it read.
        assert sorted(res["rows"].values()) == sorted(res["local"])
        held.update({int(r): row for r, row in res["rows"].items()})
    assert sorted(held) == list(range(16))  # the two processes hold all rows, none twice
    np.testing.assert_array_equal(sorted(held.values()), sorted(expected))
