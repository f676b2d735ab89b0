"""A real uvicorn server for the web API tests, on a free port, in a background thread."""
from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from fastq import App
from fastq.web import web_server
from tests.conftest import wait_for


@contextmanager
def serve(app: App, sample_interval: float = 0.2) -> Iterator[str]:
    """Serve ``app``'s web API; yields its base URL; stops the server afterwards."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = web_server(app, port=port, log_level="warning", sample_interval=sample_interval)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started, timeout=10, message="the web server to start")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        assert not thread.is_alive(), "the web server did not stop"
        sock.close()
