"""Decode speed of the engine with tools on against off, same process, same prompts.

    python benchmarks/engine_tools.py                  # SmolLM2-135M, batch 4, 64 new tokens
    python benchmarks/engine_tools.py --batch 1 --new-tokens 32

With tools on, a ChatML model's loop returns to the host after every sampled token that
contains ">" (a possible end of `</tool_call>`), and after each call the tool's output is forced
through the decode step. The conversation shows one worked call in the `<tool_call>` format
before the question, so the model may copy it; the output says how many calls it made. Timings exclude loading
and compilation (a warm-up run of each comes first); the best of --repeats runs is reported.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import infer  # noqa: E402
from infer.load_model import smollm2_gguf_path  # noqa: E402
from infer.runtime import engine  # noqa: E402

SYSTEM = ("You can use a calculator. To call it, write <tool_call>\n{\"name\": \"calculator\", "
          "\"arguments\": {\"expression\": \"...\"}}\n</tool_call> and wait for its answer.")
QUESTIONS = ["What is 4817 * 293?", "What is 12.5 / 4 + 7?", "Compute 2**20 - 1.",
             "How much is 365 * 24 * 60?", "What is 1234 + 5678?", "What is 99 * 99?",
             "What is 7 % 3?", "Divide 144 by 12."]


EXAMPLE = [
    {"role": "user", "content": "What is 12 * 12?"},
    {"role": "assistant", "content": None, "tool_calls": [{
        "id": "call_1", "type": "function",
        "function": {"name": "calculator", "arguments": '{"expression": "12 * 12"}'}}]},
    {"role": "tool", "content": "144", "tool_call_id": "call_1", "name": "calculator"},
    {"role": "assistant", "content": "12 * 12 = 144."},
]


def run(model, questions, tools, new_tokens, weights):
    prompts = [EXAMPLE + [{"role": "user", "content": q}] for q in questions]
    t0 = time.perf_counter()
    gen = engine.generate_text(model, prompts, chat=True, system=SYSTEM, tools=tools,
                               max_new_tokens=new_tokens, weights=weights)
    return gen, time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None, help="model source (default: SmolLM2-135M)")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--weights", default="float32", choices=["float32", "int8"])
    args = parser.parse_args()
    model = infer.load(args.model or smollm2_gguf_path())
    prompts = (QUESTIONS * args.batch)[:args.batch]
    print(f"batch {args.batch}, {args.new_tokens} new tokens, {args.weights} weights")
    for tools in ((), ("calculator",)):
        run(model, prompts, tools, args.new_tokens, args.weights)  # compile
        runs = [run(model, prompts, tools, args.new_tokens, args.weights)
                for _ in range(args.repeats)]
        gen, seconds = min(runs, key=lambda r: r[1])
        calls = sum(len(c.tool_calls) for c in gen)
        forced = sum(c.sampled.count(False) for c in gen)
        print(f"tools {'on ' if tools else 'off'}: decode {gen.decode_tokens_per_sec:8.1f} tok/s"
              f"  (wall {seconds:.2f} s, {gen.decode_tokens} decode tokens, {calls} tool calls,"
              f" {forced} forced tokens)")
        for c in gen[:2]:
            print("   ", repr(c.text[:160]), c.tool_calls)


if __name__ == "__main__":
    main()
