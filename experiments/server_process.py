"""A server in a subprocess on a free loopback port, for the experiments and benchmarks that
drive one over HTTP as a client would (the arena's judge, the serving benchmark)."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(argv: list[str], url: str, log: Path, *, ready: str = "/health",
          env: dict[str, str] | None = None, timeout: float = 600) -> subprocess.Popen:
    """Starts `argv` (its output to `log`) and returns once GET {url}{ready} answers 200."""
    import httpx

    proc = subprocess.Popen(argv, cwd=ROOT, env=dict(os.environ) if env is None else env,
                            stdout=log.open("w"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{' '.join(argv[:4])} exited ({proc.returncode}); see {log}")
        try:
            if httpx.get(url + ready, timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise SystemExit(f"{' '.join(argv[:4])} did not answer within {timeout:.0f} s; see {log}")


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
