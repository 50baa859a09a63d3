"""Aggregate decode speed of continuous batching (infer.runtime.slots) on SmolLM2-135M.

    python benchmarks/continuous.py                       # 1, 8 and 16 requests, float32 and int8
    python benchmarks/continuous.py --requests 16 --weights int8 --new-tokens 32   # quick

N greedy requests with different prompts (lengths spread around --prompt-tokens) are submitted
at once to a SlotEngine of N slots; they are prefilled in chunks between decode steps and
decode together. Reported: decode tokens/s over all rows (every token after a row's first,
over the time from the last prefill to the end), the whole run's tokens/s, and the mean time
to each request's first token. Compilation is excluded (a warm-up request runs first).
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")

TEXT = ("The history of the printing press begins with movable type in East Asia and continues "
        "with Gutenberg's press in Mainz around 1440. Printing spread quickly across Europe. ")


def run(m, weights: str, n: int, prompt_tokens: int, new: int, chunk: int) -> dict:
    from infer.runtime import engine, slots

    base = m.tokenizer.encode_ordinary(TEXT * (1 + prompt_tokens // 20))
    eng = slots.SlotEngine(engine.decode_params(m, weights), m.config, slots=n,
                           max_len=2 * prompt_tokens + new, chunk=chunk)
    slots.generate(eng, [base[:8]], max_new_tokens=4)  # compiles both executables
    prompts = [base[i:i + prompt_tokens // 2 + (i * 37) % prompt_tokens] for i in range(n)]
    first: dict[int, float] = {}
    t0 = time.perf_counter()
    reqs = [eng.submit(slots.Request(p, max_new_tokens=new, row=i, on_token=lambda e: first
                                     .setdefault(e.row, time.perf_counter())))
            for i, p in enumerate(prompts)]
    eng.run_until_idle()
    end = time.perf_counter()
    last_first = max(first.values())
    tokens = sum(len(r.result.token_ids) for r in reqs)
    return {"decode": n * (new - 1) / max(end - last_first, 1e-9) if new > 1 else 0.0,
            "total": tokens / (end - t0), "ttft": sum(first.values()) / n - t0,
            "prompt": sum(map(len, prompts)) / n}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="smollm2")
    p.add_argument("--requests", type=int, nargs="+", default=[1, 8, 16])
    p.add_argument("--weights", nargs="+", default=["float32", "int8"],
                   choices=["float32", "int8"])
    p.add_argument("--prompt-tokens", type=int, default=128)
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--chunk", type=int, default=64)
    args = p.parse_args(argv)

    import infer

    m = infer.load(args.model)
    print(f"{args.model}: prompts ~{args.prompt_tokens} tokens, {args.new_tokens} new, chunk "
          f"{args.chunk}, load avg {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores",
          flush=True)
    head = f"{'weights':<9}{'requests':>9}{'prompt':>8}{'decode tok/s':>14}{'all tok/s':>11}{'ttft s':>8}"
    rows = []
    for weights in args.weights:
        for n in args.requests:
            r = run(m, weights, n, args.prompt_tokens, args.new_tokens, args.chunk)
            rows.append(f"{weights:<9}{n:>9}{r['prompt']:>8.0f}{r['decode']:>14.1f}"
                        f"{r['total']:>11.1f}{r['ttft']:>8.2f}")
            print(rows[-1], flush=True)
    print("\n" + head + "\n" + "-" * len(head) + "\n" + "\n".join(rows))


if __name__ == "__main__":
    main()
