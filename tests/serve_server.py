"""A real server for the serve tests: uvicorn on 127.0.0.1 and a free port, in a thread."""

from __future__ import annotations

import contextlib
import socket
import threading
import time

import uvicorn

from infer.serve.app import create_app
from infer.serve.worker import Worker


@contextlib.contextmanager
def running(worker: Worker, *, start_worker: bool = True, **app_kwargs):
    """Yields the base URL (http://127.0.0.1:PORT) of the app serving `worker`."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(worker, **app_kwargs), log_level="error"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    if start_worker:
        worker.start()
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        if start_worker:
            worker.close()
        sock.close()
