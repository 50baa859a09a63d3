"""Decode speed of the engine with tools on against off, same process, same prompts.

    python benchmarks/engine_tools.py                  # SmolLM2-135M, batch 4, 64 new tokens
    python benchmarks/engine_tools.py --batch 1 --new-tokens 32
    python benchmarks/engine_tools.py --model runs/tool_use_v3/sft_tool --batch 32 --new-tokens 96

Two kinds of model, two kinds of prompt:
- a twofiles chat model (the project's chat tokens; e.g. the tool-use experiment's calculator
  model) gets held-out questions of the arithmetic task, bare, as it was fine-tuned on them;
  its loop returns to the host only after `<|tool_call_end|>`;
- a ChatML model (SmolLM2) gets one worked `<tool_call>` example before each question, so it
  may copy it; its loop returns to the host after every sampled token containing ">" (a
  possible end of `</tool_call>`).

After each call the tool's output is forced through the decode step. Reported per setting:
the engine's decode rate (tokens through the decode step, forced ones included, over the time
in the decode step), the end-to-end rate (completion tokens over the whole generate call:
prefill, host round trips and the tool runs included), and the calls made. Timings exclude
loading and compilation (a warm-up run of each setting comes first); the best of --repeats
runs is reported.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import infer  # noqa: E402
from infer.chat.template import is_twofiles_tokenizer  # noqa: E402
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


def prompts_for(model, batch: int, digits: tuple[int, int]) -> tuple[list, str | None]:
    """(conversations, system prompt) suited to the model's chat format."""
    if model.chat_template is None and is_twofiles_tokenizer(model.tokenizer):
        from evals.tasks import arithmetic
        problems = arithmetic.problems(batch, digits=digits, ops="*", stream="held_out")
        return [[{"role": "user", "content": p.prompt}] for p in problems], None
    questions = (QUESTIONS * batch)[:batch]
    return [EXAMPLE + [{"role": "user", "content": q}] for q in questions], SYSTEM


def run(model, prompts, system, tools, new_tokens, weights):
    t0 = time.perf_counter()
    gen = engine.generate_text(model, prompts, chat=True, system=system, tools=tools,
                               max_new_tokens=new_tokens, weights=weights)
    return gen, time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None,
                        help="a twofiles run, GGUF or HF folder (default: SmolLM2-135M)")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--digits", default="4,3",
                        help="a twofiles model's problems: digits of a and b (default 4,3)")
    parser.add_argument("--weights", default="float32", choices=["float32", "int8"])
    args = parser.parse_args()
    model = infer.load(args.model or smollm2_gguf_path())
    digits = tuple(int(d) for d in args.digits.split(","))
    prompts, system = prompts_for(model, args.batch, digits)
    with open("/proc/loadavg") as f:
        load = " ".join(f.read().split()[:3])
    print(f"{args.model or 'smollm2'}: batch {args.batch}, {args.new_tokens} new tokens, "
          f"{args.weights} weights, load average {load}")
    for tools in ((), ("calculator",)):
        run(model, prompts, system, tools, args.new_tokens, args.weights)  # compile
        runs = [run(model, prompts, system, tools, args.new_tokens, args.weights)
                for _ in range(args.repeats)]
        gen, seconds = min(runs, key=lambda r: r[1])
        calls = sum(len(c.tool_calls) for c in gen)
        forced = sum(c.sampled.count(False) for c in gen)
        tokens = sum(len(c.token_ids) for c in gen)
        print(f"tools {'on ' if tools else 'off'}: decode {gen.decode_tokens_per_sec:8.1f} tok/s"
              f"  end to end {tokens / seconds:8.1f} tok/s  (wall {seconds:.2f} s, {tokens} "
              f"tokens of which {forced} forced, {calls} tool calls in {len(gen)} rows)")
        for c in gen[:2]:
            print("   ", repr(c.text[:200]), c.tool_calls)


if __name__ == "__main__":
    main()
