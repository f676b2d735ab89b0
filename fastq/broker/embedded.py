"""The embedded default: with no broker configured, use localhost:6379 if a Redis answers there,
else start a private ``redis-server`` on a free port for the life of this process."""
from __future__ import annotations

import atexit
import os
import shutil
import socket
import subprocess
import tempfile
import time

import structlog

from fastq.errors import BrokerUnavailable

DEFAULT_PORT = 6379
ENV = "FASTQ_BROKER_URL"
log = structlog.get_logger("fastq.embedded")
_private: subprocess.Popen | None = None


def _answers(host: str, port: int, timeout: float = 0.3) -> bool:
    """True when something speaking RESP answers PING at host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(b"*1\r\n$4\r\nPING\r\n")
            return sock.recv(16).startswith((b"+PONG", b"-NOAUTH"))
    except OSError:
        return False


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_private_redis() -> str:
    """Start ``redis-server`` from PATH on a free port (no persistence); stop it at exit."""
    global _private
    exe = shutil.which("redis-server")
    if exe is None:
        raise BrokerUnavailable(
            "no broker configured (FASTQ_BROKER_URL or App(broker=...)), nothing answers on "
            "localhost:6379, and no redis-server on PATH to start one: install Redis "
            "(e.g. apt-get install redis-server) or point FASTQ_BROKER_URL at a Redis server")
    port = _free_port()
    workdir = tempfile.mkdtemp(prefix="fastq-redis-")
    proc = subprocess.Popen(
        [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", workdir, "--logfile", os.path.join(workdir, "redis.log")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while not _answers("127.0.0.1", port):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise BrokerUnavailable(f"private redis-server did not start (see {workdir}/redis.log)")
        time.sleep(0.02)
    _private = proc
    atexit.register(stop_private_redis)
    url = f"redis://127.0.0.1:{port}/0"
    log.info("started a private redis-server for this run", url=url, pid=proc.pid)
    return url


def stop_private_redis() -> None:
    global _private
    if _private is not None and _private.poll() is None:
        _private.terminate()
        try:
            _private.wait(5)
        except subprocess.TimeoutExpired:
            _private.kill()
    _private = None


def default_url() -> str:
    return f"redis://127.0.0.1:{DEFAULT_PORT}/0"


def resolve_broker_url(configured: str | None) -> str:
    """The broker URL to use, starting a private Redis when nothing is configured or running.

    The chosen URL is exported as FASTQ_BROKER_URL so worker processes forked later agree.
    """
    url = configured or os.environ.get(ENV)
    if not url:
        url = default_url() if _answers("127.0.0.1", DEFAULT_PORT) else start_private_redis()
        os.environ[ENV] = url
    return url
