"""Run the real server on a loopback port in a background thread, for the tests."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from stepdistill.serve import ServeSettings, create_app, uvicorn_config
from stepdistill.student import Student


@dataclass
class LiveServer:
    url: str
    app: Any

    @property
    def model_calls(self) -> int:
        return int(self.app.state.batcher.calls)


@contextmanager
def running_server(student: Student, settings: ServeSettings | None = None) -> Iterator[LiveServer]:
    """A uvicorn server serving ``student`` on a free loopback port; stopped afterwards."""
    import uvicorn

    settings = settings or ServeSettings()
    app = create_app(student, settings)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))  # the OS picks a free port; no race with other tests
    port = sock.getsockname()[1]
    # The same uvicorn settings as `stepdistill serve` (connection limits, timeouts).
    server = uvicorn.Server(uvicorn_config(app, settings, "127.0.0.1", port))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("test server did not start")
        time.sleep(0.02)
    try:
        yield LiveServer(f"http://127.0.0.1:{port}", app)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


def wait_until_healthy(url: str, process: Any, timeout: float = 120) -> str | None:
    """Poll ``url``/health until it answers 200; the server's output if its process died
    or ``timeout`` passed first (None when it is up)."""
    import httpx

    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"{url}/health").status_code == 200:
                return None
        except httpx.TransportError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            return process.stdout.read() if process.stdout else ""
        time.sleep(0.2)
