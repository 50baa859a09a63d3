"""glibc malloc settings that keep a CPU training step's freed memory mapped, set by re-exec.

XLA:CPU allocates each step's buffers afresh and frees them at its end. With glibc's defaults
the large ones are served by mmap (or by per-thread arenas, whose heaps are mmap'd too) and
handed back to the kernel when freed, so the next step faults every page in again: on the bench
step (benchmarks/train_throughput.py, bf16 with flash attention) that is ~261,000 minor faults
and ~0.4 s of system time a step. With the settings below the freed memory stays in the main
heap and is reused: 0 faults a step, and the step took 1013-1034 ms against 1241-1288 ms
(2-core Xeon with AMX, one process each way, 6 steps, under the machine's lock); with the AMX
flash kernel, 858-878 ms in all 11 steps after the first.

The settings are glibc tunables, read only when a process starts (mallopt() from Python comes
after XLA's threads have their arenas, and faults returned after a few steps when tried), so
an entry point calls `reexec_with_tunables()` first thing: if the variable lacks them, the
process replaces itself (same pid, same arguments) with one that has them.
Off where it cannot help or may hurt: non-glibc hosts, hosts with a TPU or GPU attached (their
steps' buffers live on the device; a host's many loader threads would share one arena), or
TWOFILES_MALLOC=system.
"""

from __future__ import annotations

import os
import platform
import sys

from train import host

TUNABLES = (
    "glibc.malloc.arena_max=1",  # every thread on the main heap (a thread arena's heaps are
    # mmap'd, 64 MiB at most: with 2 arenas ~220,000 faults came back every third step)
    "glibc.malloc.mmap_max=0",  # large buffers from the heap, not a fresh mapping each
    "glibc.malloc.trim_threshold=68719476736",  # freed memory is kept, not given back
    "glibc.malloc.top_pad=268435456",  # the heap grows in 256 MiB steps (fewer brk calls)
)
# For a process that also runs PyTorch (benchmarks/train_throughput.py races it): torch's
# compiled bf16 step took 947 ms with one arena against 512 with two (its threads contend for
# the one lock), while two arenas cost XLA's step some faults back (a thread arena's heaps).
SHARED_TUNABLES = ("glibc.malloc.arena_max=2",) + TUNABLES[1:]


def tunables_value(current: str, tunables: tuple[str, ...] = TUNABLES) -> str | None:
    """GLIBC_TUNABLES with `tunables` added, or None when `current` already names every one of
    them (a tunable the user set keeps the user's value)."""
    items = [t for t in current.split(":") if t]
    named = {t.split("=", 1)[0] for t in items}
    missing = [t for t in tunables if t.split("=", 1)[0] not in named]
    return ":".join(items + missing) if missing else None


def wanted(env=os.environ) -> bool:
    """True on a glibc host without an accelerator, unless TWOFILES_MALLOC=system."""
    if env.get("TWOFILES_MALLOC", "").lower() == "system":
        return False
    if sys.platform != "linux" or platform.libc_ver()[0] != "glibc":
        return False
    return not host.has_accelerator()


def reexec_with_tunables(tunables: tuple[str, ...] = TUNABLES) -> None:
    """Replaces this process with itself under `tunables`, when wanted and not yet set.
    Call it before importing jax (nothing done before it is kept)."""
    if not wanted():
        return
    value = tunables_value(os.environ.get("GLIBC_TUNABLES", ""), tunables)
    if value is None:
        return
    env = dict(os.environ, GLIBC_TUNABLES=value)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)
