"""A bounded load test on loopback: many concurrent requests, zero errors, unchanged replies."""

from __future__ import annotations

import concurrent.futures
import os
import time

import httpx
import numpy as np
import pytest

from infer.runtime import engine
from infer.serve.worker import Worker
from tests.serve_server import running
from tests.test_export_common import tiny_twofiles_model

# A few hundred requests at concurrency 16 in CI; SERVE_LOAD_REQUESTS=2000 for a longer run.
REQUESTS = int(os.environ.get("SERVE_LOAD_REQUESTS", "256"))
CONCURRENCY, MAX_TOKENS = 16, 8
PROMPTS = ["hello", "the cat sat", "one two three", "why"]


def test_concurrent_requests_all_succeed_with_their_solo_greedy_reply():
    model = tiny_twofiles_model()
    expected = {p: engine.generate_text(model, [[{"role": "user", "content": p}]], chat=True,
                                        max_new_tokens=MAX_TOKENS, temperature=0.0)[0].text
                for p in PROMPTS}
    batches = []
    worker = Worker({"tiny": model}, max_queue=REQUESTS)
    run = worker._run
    worker._run = lambda batch: (batches.append(len(batch)), run(batch))
    with running(worker) as url, httpx.Client(timeout=60) as http:
        def ask(i):
            prompt = PROMPTS[i % len(PROMPTS)]
            t0 = time.perf_counter()
            r = http.post(url + "/v1/chat/completions", json={
                "model": "tiny", "messages": [{"role": "user", "content": prompt}],
                "max_tokens": MAX_TOKENS, "temperature": 0, "stream": i % 2 == 1})
            seconds = time.perf_counter() - t0
            if r.status_code != 200:
                return prompt, None, seconds, f"{r.status_code} {r.text[:200]}"
            if i % 2:
                text = "".join(chunk["choices"][0]["delta"].get("content", "")
                               for chunk in _chunks(r.text) if chunk["choices"])
            else:
                text = r.json()["choices"][0]["message"]["content"]
            return prompt, text, seconds, None

        with concurrent.futures.ThreadPoolExecutor(CONCURRENCY) as pool:
            list(pool.map(ask, range(2 * CONCURRENCY)))  # compile outside the timings
            batches.clear()
            t0 = time.perf_counter()
            results = list(pool.map(ask, range(REQUESTS)))
            wall = time.perf_counter() - t0
    latencies = np.array([s for _, _, s, _ in results])
    print(f"\n{REQUESTS} requests at concurrency {CONCURRENCY} (load "
          f"{os.getloadavg()[0]:.2f}): {REQUESTS / wall:.1f} req/s, "
          f"p50 {np.percentile(latencies, 50) * 1e3:.0f} ms, "
          f"p99 {np.percentile(latencies, 99) * 1e3:.0f} ms, "
          f"batch sizes {sorted(set(batches))}")
    assert [why for _, text, _, why in results if text is None] == []
    assert [p for p, text, _, _ in results if text != expected[p]] == []


def _chunks(sse_text: str):
    import json

    for line in sse_text.splitlines():
        if line.startswith("data: ") and line != "data: [DONE]":
            yield json.loads(line[6:])


@pytest.mark.parametrize("argv, message", [
    (["--port", "70000"], "--port"), (["--max-queue", "0"], "--max-queue"),
    (["--model", "m"], "each model once"), (["--api-key", ""], "--api-key"),
])
def test_bad_serve_flags_fail_in_one_line_before_loading(capsys, argv, message):
    from infer.__main__ import main

    with pytest.raises(SystemExit) as e:
        main(["serve", "--model", "m", *argv])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1
