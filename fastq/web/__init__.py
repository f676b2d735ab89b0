"""The REST API and the live dashboard: ``fastq -A proj web --port N`` (``fastq[web]``,
docs/web.md).

``api.py`` builds the FastAPI app from a fastq App; ``sampler.py`` samples the broker once a
second in the server (depths, rates, workers, dead letters) for the page's live stream;
``recent.py`` keeps the tasks submitted through the API; ``auth.py`` and ``body_limit.py`` guard
the endpoints; ``static/`` is the page; ``server.py`` the uvicorn server.
"""
from __future__ import annotations

from fastq.web.api import create_app
from fastq.web.server import web_server

__all__ = ["create_app", "web_server"]
