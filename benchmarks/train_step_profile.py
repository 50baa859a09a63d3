"""Where one twofiles training step's time goes: XLA:CPU's ops of the bench step, timed and named.

    python benchmarks/train_step_profile.py [--variant twofiles-bf16-flash] [--steps 2]
                                            [--top 30] [--set kernels.loss_chunk=2048 ...]

Runs the variant of benchmarks/train_throughput.py (same config, batch and weights), then
profiles `--steps` steps with jax.profiler (XLA's per-thunk trace events, turned on with
--xla_cpu_enable_xprof_traceme) and reads the optimised HLO that XLA dumps for the step. Each
trace event is an HLO instruction of the step's entry computation (a fusion, a custom call,
a loop); from the HLO it prints, per op kind, the milliseconds per step and, for every
instruction holding a dot, its FLOPs (2 x output elements x contraction), its GFLOP/s, its
operand shapes and what it is in the model (the jax op_name of its dot: jvp = forward,
transpose = backward). XLA's thunk executor runs independent ops at the same time (a layer's
dx and dW matmuls, say), each on the shared pool of all cores, so the per-op times add up to
more than the step: the first lines also give the wall time the ops cover and each group's
fair share of it (1/n of every moment during which n ops ran).
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import math
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout

_INSTR = re.compile(r"^\s*(?:ROOT )?%?([\w.\-]+) = (.*?) ([a-z][\w\-]*)\((.*)$")
_COMP = re.compile(r"^(?:ENTRY )?%?([\w.\-]+) .*\{\s*$")
_SHAPE = re.compile(r"(\w+)\[([\d,]*)\]")


def parse_hlo(text: str) -> dict[str, list[dict]]:
    """Computation name -> its instructions {name, shape, op, rest} (HLO text, one per line)."""
    comps, current = {}, None
    for line in text.splitlines():
        m = _COMP.match(line)
        if m and not line[0].isspace():  # a computation's header, not an instruction
            current = comps.setdefault(m.group(1), [])
            continue
        m = _INSTR.match(line)
        if m and current is not None:
            current.append({"name": m.group(1), "shape": m.group(2), "op": m.group(3),
                            "rest": m.group(4)})
    return comps


def _dims(shape: str) -> list[int]:
    m = _SHAPE.search(shape)
    return [int(x) for x in m.group(2).split(",") if x] if m else []


def dot_info(instr: dict, shapes: dict[str, str]) -> dict:
    """FLOPs, operand shapes and op_name of one dot instruction (`shapes`: the shape of each
    instruction of its computation, by name)."""
    names = re.findall(r"%([\w.\-]+)", instr["rest"].split(")")[0])
    operands = [_SHAPE.search(shapes.get(n, "?[]")).groups() for n in names]
    lhs = [int(x) for x in operands[0][1].split(",") if x] if operands else []
    contract = re.search(r"lhs_contracting_dims=\{([\d,]*)\}", instr["rest"])
    k = 1
    for i in (contract.group(1).split(",") if contract and contract.group(1) else []):
        k *= lhs[int(i)]
    out = 1
    for d in _dims(instr["shape"]):
        out *= d
    op_name = re.search(r'op_name="([^"]*)"', instr["rest"])
    return {"flops": 2 * out * k, "shapes": " x ".join(f"{t}[{s}]" for t, s in operands)
            + f" -> {instr['shape']}", "op_name": op_name.group(1) if op_name else ""}


def called(instr: dict) -> list[str]:
    m = re.findall(r"(?:calls|body|condition|to_apply)=%?([\w.\-]+)", instr["rest"])
    return m


def dots_under(comps, name: str, seen=None) -> list[dict]:
    """Every dot in computation `name` and the computations it calls."""
    seen = set() if seen is None else seen
    if name in seen or name not in comps:
        return []
    seen.add(name)
    out = []
    shapes = {ins["name"]: ins["shape"] for ins in comps[name]}
    for ins in comps[name]:
        if ins["op"] == "dot":
            out.append(dot_info(ins, shapes))
        for c in called(ins):
            out += dots_under(comps, c, seen)
    return out


def short_op_name(op_name: str) -> str:
    """'jit(step)/transpose(jvp(...))/.../dot_general' -> 'bwd ...dot_general' (the tail)."""
    kind = "bwd" if "transpose(" in op_name else "fwd"
    tail = "/".join(op_name.split("/")[-2:])
    return f"{kind} {tail}"[:70]


def step_hlo(dump: str) -> str:
    files = [f for f in glob.glob(f"{dump}/*after_optimizations.txt") if "jit_step" in f]
    if not files:
        raise SystemExit(f"no optimised HLO of the step in {dump}")
    return Path(max(files, key=os.path.getsize)).read_text()


def trace_events(trace_dir: str) -> list[dict]:
    """The complete ("X") events of the perfetto trace jax.profiler wrote."""
    path = glob.glob(trace_dir + "/**/perfetto_trace.json.gz", recursive=True)[0]
    events = json.load(gzip.open(path))
    events = events["traceEvents"] if isinstance(events, dict) else events
    return [e for e in events if e.get("ph") == "X" and "dur" in e]


def trace_totals(events: list[dict]) -> tuple[collections.Counter, collections.Counter]:
    total_us, count = collections.Counter(), collections.Counter()
    for e in events:
        total_us[e["name"]] += e["dur"]
        count[e["name"]] += 1
    return total_us, count


def shared_us(events: list[dict]) -> collections.Counter:
    """Each event's share of the wall time: while n events run at once, each is charged 1/n of
    it, so the shares add up to busy_us (a fair split where XLA overlapped independent ops)."""
    edges = sorted([(e["ts"], 1, i) for i, e in enumerate(events)] +
                   [(e["ts"] + e["dur"], -1, i) for i, e in enumerate(events)])
    share, running, last = collections.Counter(), set(), None
    for t, kind, i in edges:
        if running and last is not None:
            for j in running:
                share[events[j]["name"]] += (t - last) / len(running)
        last = t
        (running.add if kind == 1 else running.discard)(i)
    return share


def busy_us(events: list[dict]) -> float:
    """The wall time during which at least one of `events` ran (their intervals' union): less
    than their summed durations where XLA ran independent thunks at the same time."""
    busy, end = 0.0, float("-inf")
    for start, stop in sorted((e["ts"], e["ts"] + e["dur"]) for e in events):
        if start > end:
            busy += stop - start
        elif stop > end:
            busy += stop - end
        end = max(end, stop)
    return busy


def kind_of(name: str) -> str:
    return re.sub(r"\.\d+$", "", name)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--variant", default="twofiles-bf16-flash")
    p.add_argument("--config", default="bench")
    p.add_argument("--set", dest="overrides", action="append", default=[])
    p.add_argument("--steps", type=int, default=2, help="profiled steps (times are per step)")
    p.add_argument("--top", type=int, default=30, help="dot instructions listed")
    args = p.parse_args(argv)
    dump = tempfile.mkdtemp(prefix="twofiles_hlo_")
    # Both flags must be set before jax starts its CPU client.
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                               f" --xla_cpu_enable_xprof_traceme=true --xla_dump_to={dump}"
                               " --xla_dump_hlo_module_re=.*step.*")

    import jax
    import numpy as np

    import model
    from benchmarks import train_throughput as tt

    cfg = tt.load_config(args.config, args.overrides)
    inputs, targets = tt.make_batch(cfg)
    params0 = jax.tree.map(np.asarray, model.init(cfg.model, jax.random.key(cfg.seed)))
    dtype = "bfloat16" if "bf16" in args.variant else "float32"
    v = tt.JaxVariant(args.variant, cfg, dtype, params0, inputs, targets)
    for _ in range(2):
        v.step()
    trace_dir = tempfile.mkdtemp(prefix="twofiles_trace_")
    with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
        for _ in range(args.steps):
            v.step()
    events = trace_events(trace_dir)
    total_us, count = trace_totals(events)
    comps = parse_hlo(step_hlo(dump))
    # HLO names are unique in a module; a loop's body ops have trace events of their own.
    instrs = {ins["name"]: ins for body in comps.values() for ins in body}
    op_events = [e for e in events if e["name"] in instrs
                 and instrs[e["name"]]["op"] not in ("while", "call")]
    shapes = {n: ins["shape"] for n, ins in instrs.items()}

    per_step = {n: t / 1e3 / args.steps for n, t in total_us.items() if n in instrs}
    loops = {n: ms for n, ms in per_step.items() if instrs[n]["op"] in ("while", "call")}
    by_kind = collections.Counter()
    dot_rows = []
    for name, ms in per_step.items():
        if name in loops:
            continue
        ins = instrs[name]
        dots = [d for c in called(ins) for d in dots_under(comps, c)]
        if ins["op"] == "dot":
            dots.append(dot_info(ins, shapes))
        by_kind[("dot: " if dots else "") + kind_of(name)] += ms
        if dots:
            dot_rows.append((ms, sum(d["flops"] for d in dots), name, dots, count[name]))
    step_ms = sum(ms for n, ms in per_step.items() if n not in loops)
    dot_ms = sum(r[0] for r in dot_rows)
    dot_flops = sum(flops * n / args.steps for _, flops, _, _, n in dot_rows)
    print(f"{args.variant}: {step_ms:.0f} ms of ops per step; dots {dot_ms:.0f} ms, "
          f"{dot_flops / 1e9:.1f} GFLOP at "
          f"{dot_flops / max(dot_ms, 1e-9) / 1e6:.0f} GFLOP/s; load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"the ops' intervals cover {busy_us(op_events) / 1e3 / args.steps:.0f} ms of wall time "
          "per step (less than their sum where independent ops ran at the same time)")
    span = max(e["ts"] + e["dur"] for e in op_events) - min(e["ts"] for e in op_events)
    print(f"  {len(op_events) / args.steps:.0f} ops a step; from the first op's start to the "
          f"last's end {span / 1e3 / args.steps:.0f} ms a step (the host work between included)")
    share = shared_us(op_events)
    dot_names = {name for _, _, name, _, _ in dot_rows}
    groups = collections.Counter()
    for name, us in share.items():
        group = ("dots" if name in dot_names else
                 "ffi calls (kernels)" if instrs[name]["op"] == "custom-call" else "the rest")
        groups[group] += us / 1e3 / args.steps
    print("  the wall time shared among the ops running at each moment: " +
          ", ".join(f"{g} {ms:.0f} ms" for g, ms in groups.most_common()))
    print("\nby op kind (ms per step):")
    for kind, ms in by_kind.most_common():
        if ms >= 0.5:
            print(f"  {ms:8.1f}  {kind}")
    print("\ndots by what they compute (ms per step, GFLOP/s, operands of the first):")
    for what, (ms, flops, shapes) in sorted(dots_by_role(dot_rows, args.steps).items(),
                                            key=lambda kv: -kv[1][0]):
        print(f"  {ms:8.1f} ms {flops / ms / 1e6:6.0f} GFLOP/s  {what:<44} {shapes}")
    print(f"\ndot instructions, slowest first ({min(args.top, len(dot_rows))} of "
          f"{len(dot_rows)}; xN: calls per profiled steps, e.g. a loop body's):")
    for ms, flops, name, dots, n in sorted(dot_rows, key=lambda r: -r[0])[:args.top]:
        calls = n / args.steps
        rate = flops * calls / ms / 1e6
        print(f"  {ms:7.1f} ms {rate:6.0f} GFLOP/s  x{calls:<3g} {name:<22} {dots[0]['shapes']}"
              f"\n{'':14}{short_op_name(dots[0]['op_name'])}")
    for n, ms in loops.items():
        print(f"loop {n}: {ms:.1f} ms per step (its body's ops are counted above)")
    print("\nffi calls by kernel (ms per step, calls per step, GFLOP/s for the bf16 GEMM):")
    for target, (ms, calls, flops) in sorted(ffi_by_target(per_step, instrs, shapes, count,
                                                           args.steps).items(),
                                             key=lambda kv: -kv[1][0]):
        rate = f"  {flops / ms / 1e6:6.0f} GFLOP/s" if flops else ""
        print(f"  {ms:8.1f}  x{calls:<4g} {target}{rate}")
    gemms = gemm_calls(per_step, instrs, shapes, count, comps, args.steps)
    if gemms:
        print(f"\nbf16 GEMM calls, slowest first ({min(args.top, len(gemms))} of {len(gemms)}; "
              "ms per step, GFLOP/s, calls per step):")
        for ms, rate, calls, what, op in gemms[:args.top]:
            print(f"  {ms:7.1f} ms {rate:6.0f} GFLOP/s  x{calls:<3g} {what}\n{'':14}{op}")
    print("\nthe other ops by what they compute (jax op_name: fwd/bwd, in the loss's scan, op):")
    for what, ms in other_ops(per_step, instrs, comps, loops).most_common(args.top):
        print(f"  {ms:8.1f}  {what}")
    print(f"\nthe slowest other ops ({args.top}; ms per step, output shape, jax op):")
    for name, ms in slowest_others(per_step, instrs, comps, loops, args.top):
        print(f"  {ms:7.1f}  {name:<30} {instrs[name]['shape'][:40]:<40} "
              f"{short_op_name(op_name_of(instrs[name], comps))}")
    shutil.rmtree(dump, ignore_errors=True)
    shutil.rmtree(trace_dir, ignore_errors=True)


def ffi_by_target(per_step, instrs, shapes, count, steps: int) -> dict:
    """{custom call target: [ms, calls, FLOPs] per step}; FLOPs for the bf16 GEMM (2 M N K, K
    from its first operand's size over M)."""
    out = {}
    for name, ms in per_step.items():
        ins = instrs[name]
        if ins["op"] != "custom-call":
            continue
        target = re.search(r'custom_call_target="([^"]*)"', ins["rest"])
        row = out.setdefault(target.group(1) if target else "?", [0.0, 0.0, 0.0])
        calls = count[name] / steps
        row[0], row[1] = row[0] + ms, row[1] + calls
        if target and "bf16_gemm" in target.group(1):
            first = re.findall(r"%([\w.\-]+)", ins["rest"].split(")")[0])[:1]
            a = math.prod(_dims(shapes.get(first[0], "?[]") if first else "?[]"))
            m_n = _dims(ins["shape"])
            if len(m_n) == 2:
                row[2] += 2 * m_n[1] * a * calls
    return out


def gemm_calls(per_step, instrs, shapes, count, comps, steps: int) -> list:
    """The bf16 GEMM's calls, slowest first: (ms per step, GFLOP/s, calls per step, operand
    shapes with their transposes, jax op)."""
    rows = []
    for name, ms in per_step.items():
        ins = instrs[name]
        if ins["op"] != "custom-call" or "bf16_gemm" not in ins["rest"]:
            continue
        operands = re.findall(r"%([\w.\-]+)", ins["rest"].split(")")[0])[:2]
        dims = [_dims(shapes.get(o, "?[]")) for o in operands]
        m_n = _dims(ins["shape"])
        calls = count[name] / steps
        flops = 2 * m_n[1] * math.prod(dims[0]) * calls if len(m_n) == 2 and dims else 0
        trans = [f"{t}={v}" for t, v in re.findall(r"(trans_[ab]) = (\d)", ins["rest"])]
        what = " x ".join(shapes.get(o, "?").split("{")[0] for o in operands)
        rows.append((ms, flops / ms / 1e6 if ms else 0.0, calls, f"{what} {' '.join(trans)}",
                     short_op_name(op_name_of(ins, comps))))
    return sorted(rows, key=lambda r: -r[0])


def slowest_others(per_step, instrs, comps, loops, top: int) -> list:
    """The `top` slowest non-dot, non-ffi instructions: [(name, ms per step)]."""
    rows = [(n, ms) for n, ms in per_step.items()
            if n not in loops and instrs[n]["op"] not in ("dot", "custom-call")
            and not any(dots_under(comps, c) for c in called(instrs[n]))]
    return sorted(rows, key=lambda r: -r[1])[:top]


def dots_by_role(dot_rows, steps: int) -> dict:
    """{fwd/bwd + einsum: [ms, FLOPs, operand shapes]} per step, over the dot instructions."""
    out = {}
    for ms, flops, _, dots, n in dot_rows:
        row = out.setdefault(short_op_name(dots[0]["op_name"]), [0.0, 0.0, dots[0]["shapes"]])
        row[0] += ms
        row[1] += flops * n / steps
    return out


def op_name_of(ins: dict, comps) -> str:
    """The jax op_name of an instruction, or of the last op inside the fusion it calls that
    has one (XLA leaves many fusions without metadata of their own)."""
    m = re.search(r'op_name="([^"]*)"', ins["rest"])
    if m:
        return m.group(1)
    for c in called(ins):
        for inner in reversed(comps.get(c, [])):
            m = re.search(r'op_name="([^"]*)"', inner["rest"])
            if m:
                return m.group(1)
    return ""


def other_ops(per_step, instrs, comps, loops) -> collections.Counter:
    """ms per step of the non-dot ops, keyed by where their jax op came from."""
    out = collections.Counter()
    for name, ms in per_step.items():
        ins = instrs[name]
        if name in loops or ins["op"] == "dot" or any(dots_under(comps, c) for c in called(ins)):
            continue
        op_name = op_name_of(ins, comps)
        where = ("bwd " if "transpose(" in op_name else "fwd ") + (
            "loss-scan " if "/while/" in op_name else "") + ("silu " if "silu" in op_name else "")
        out[where + (op_name.split("/")[-1] or ins["op"])] += ms
    return out


if __name__ == "__main__":
    from train import host_malloc
    host_malloc.reexec_with_tunables()  # as `python -m train` runs: train/host_malloc.py
    main()
