"""A real uvicorn server for the web API tests, on a free port, in a background thread."""
from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn

from fastq import App
from fastq.web import create_app
from tests.conftest import wait_for


@contextmanager
def serve(app: App, sample_interval: float = 0.2) -> Iterator[str]:
    """Serve ``app``'s web API; yields its base URL; stops the server afterwards."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(app, sample_interval=sample_interval),
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started, timeout=10, message="the web server to start")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
