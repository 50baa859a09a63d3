"""train.host_malloc: the re-exec'd process keeps freed memory mapped (no page faults on reuse)."""

import os
import subprocess
import sys
import textwrap

import pytest

from train import host_malloc

# A child that (optionally) re-execs itself, then allocates, touches and frees 256 MiB twice,
# the way a step's buffers come and go, and prints the minor page faults of the second round.
CHILD = textwrap.dedent("""
    import ctypes, os, resource, sys
    from train import host_malloc
    if sys.argv[1] == "reexec":
        host_malloc.reexec_with_tunables()
    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype = ctypes.c_void_p
    def round_trip():
        p = libc.malloc(256 << 20)
        libc.memset(ctypes.c_void_p(p), 1, 256 << 20)
        libc.free(ctypes.c_void_p(p))
    round_trip()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    round_trip()
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before,
          os.environ.get("GLIBC_TUNABLES", ""))
""")


def run_child(mode: str, **env) -> tuple[int, str]:
    clean = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "TWOFILES_MALLOC")}
    out = subprocess.run([sys.executable, "-c", CHILD, mode], env={**clean, **env},
                         capture_output=True, text=True, check=True,
                         cwd=os.path.dirname(os.path.dirname(__file__))).stdout.split()
    return int(out[0]), (out[1] if len(out) > 1 else "")


def test_tunables_are_added_and_the_users_own_values_kept():
    assert host_malloc.tunables_value("") == ":".join(host_malloc.TUNABLES)
    mine = "glibc.malloc.arena_max=8:glibc.cpu.hwcaps=-AVX512F"
    value = host_malloc.tunables_value(mine)
    assert value.startswith(mine + ":")
    assert "glibc.malloc.arena_max=2" not in value and "glibc.malloc.mmap_max=0" in value
    assert host_malloc.tunables_value(":".join(host_malloc.TUNABLES)) is None


def test_switched_off_by_twofiles_malloc_system():
    assert not host_malloc.wanted({"TWOFILES_MALLOC": "system"})


@pytest.mark.skipif(not host_malloc.wanted({}), reason="glibc host without an accelerator only")
def test_reexeced_process_reuses_freed_memory_without_faults():
    plain_faults, plain_env = run_child("plain")
    faults, env = run_child("reexec")
    # 256 MiB is 65,536 pages: glibc's default maps it afresh each time and faults each page
    assert plain_env == "" and plain_faults > 60_000
    assert env == ":".join(host_malloc.TUNABLES) and faults < 1000
    off_faults, off_env = run_child("reexec", TWOFILES_MALLOC="system")
    assert off_env == "" and off_faults > 60_000
