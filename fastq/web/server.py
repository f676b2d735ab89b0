"""The uvicorn server ``fastq web`` runs."""
from __future__ import annotations

import uvicorn

from fastq.app import App
from fastq.web.api import create_app

GRACE_S = 3.0  # at shutdown, requests still running after this long are cut


def web_server(fq: App, host: str = "127.0.0.1", port: int = 5555, log_level: str = "info",
               sample_interval: float = 1.0) -> uvicorn.Server:
    """A uvicorn server of ``fq``'s web app; call ``.run()``. Its live streams end as soon as the
    server is told to stop (they never end by themselves, so shutdown would otherwise wait)."""
    server: uvicorn.Server | None = None
    api = create_app(fq, sample_interval=sample_interval,
                     stopping=lambda: server is not None and server.should_exit)
    server = uvicorn.Server(uvicorn.Config(api, host=host, port=port, log_level=log_level,
                                           timeout_graceful_shutdown=GRACE_S))
    return server
