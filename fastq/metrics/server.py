"""``fastq worker --metrics-port N``: the children's multiprocess files, merged, plus the
supervisor's scrape-time figures, served over HTTP from a thread of the supervisor."""
from __future__ import annotations

import atexit
import glob
import os
import shutil
import tempfile
from typing import Any

from fastq.middleware import Middleware

ENV = "PROMETHEUS_MULTIPROC_DIR"


def prepare() -> str:
    """Point prometheus-client's multiprocess mode at a fresh directory (removed at exit) unless
    one is set. Must run before prometheus_client is first imported in this process."""
    path = os.environ.get(ENV)
    if path:
        os.makedirs(path, exist_ok=True)
        return path
    path = tempfile.mkdtemp(prefix="fastq-metrics-")
    os.environ[ENV] = path
    pid = os.getpid()
    atexit.register(lambda: os.getpid() == pid and shutil.rmtree(path, ignore_errors=True))
    return path


class DeadChildren:
    """Before each scrape, the files of the live-mode gauges a child that is gone left behind
    (killed, or restarted) are dropped, so that no sum counts a dead child's last value."""

    def __init__(self, path: str):
        self.path = path

    def collect(self) -> list:
        from prometheus_client import multiprocess

        for found in glob.glob(os.path.join(self.path, "gauge_live*_*.db")):
            pid = int(found.rsplit("_", 1)[1][:-3])
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                multiprocess.mark_process_dead(pid, self.path)
            except PermissionError:  # alive, someone else's
                pass
        return []


def serve(worker: Any, port: int, host: str = "0.0.0.0", flower: bool = False) -> Any:  # noqa: S104
    """Start serving ``/metrics`` for ``worker`` (the Supervisor); returns the HTTP server."""
    from prometheus_client import CollectorRegistry, multiprocess, start_http_server

    from fastq.metrics.collector import WorkerCollector

    registry = CollectorRegistry()
    registry.register(DeadChildren(os.environ[ENV]))  # first: collectors run in this order
    multiprocess.MultiProcessCollector(registry)
    registry.register(WorkerCollector(worker, worker.app.broker.with_timeout(2.0), flower))
    server, _thread = start_http_server(port, addr=host, registry=registry)
    return server


class Exporter(Middleware):
    """Serves ``/metrics`` from the supervisor, started as it boots (before the first fork)."""

    def __init__(self, port: int, host: str = "0.0.0.0", flower: bool = False):  # noqa: S104
        self.port, self.host, self.flower = port, host, flower
        self.server: Any = None

    def worker_boot(self, worker: Any) -> None:
        self.server = serve(worker, self.port, self.host, self.flower)

    def worker_shutdown(self, worker: Any) -> None:
        if self.server is not None:
            self.server.shutdown()
