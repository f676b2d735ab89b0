"""Test infrastructure: a private redis-server for the session, and real worker processes.

Every test runs against a real Redis (a private one started here, so tests may flush or restart it)
and real ``fastq worker`` processes started with ``python -m fastq``.
"""
from __future__ import annotations

import importlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import redis

from fastq import keys

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RedisServer:
    """A private redis-server this test session owns (may be stopped and restarted)."""

    def __init__(self) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            pytest.exit("redis-server is not on PATH (apt-get install redis-server)", 2)
        self.exe = exe
        self.port = _free_port()
        self.dir = tempfile.mkdtemp(prefix="fastq-test-redis-")
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen | None = None

    def start(self, persist: bool = False) -> None:
        args = [self.exe, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", self.dir,
                "--logfile", os.path.join(self.dir, "redis.log")]
        args += ["--appendonly", "yes", "--appendfsync", "always"] if persist else \
            ["--save", "", "--appendonly", "no"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(port=self.port)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


_server: RedisServer | None = None


def pytest_configure(config):
    global _server
    _server = RedisServer()
    _server.start()
    os.environ["FASTQ_BROKER_URL"] = _server.url
    os.environ.setdefault("PYTHONPATH", str(ROOT))


def pytest_unconfigure(config):
    if _server is not None:
        _server.stop()


@pytest.fixture(scope="session")
def redis_server() -> RedisServer:
    assert _server is not None
    return _server


@pytest.fixture
def r(redis_server) -> redis.Redis:
    """A clean database for each test."""
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    yield client
    client.close()


def app_fixture(module: str):
    """A fixture: the App of ``module`` (a tests/apps module), reconnected for the test (an
    earlier test may have restarted the server)."""

    @pytest.fixture
    def fixture(r):
        app = importlib.import_module(module).app
        app.close()
        yield app
        app.close()

    return fixture


def worker_fixture(module: str, concurrency: int, app_name: str):
    """A fixture: a factory starting workers on ``module`` (``concurrency`` children unless told
    otherwise), after the app fixture ``app_name`` has reconnected the module's app."""

    @pytest.fixture
    def fixture(request, start_worker):
        request.getfixturevalue(app_name)

        def start(concurrency: int = concurrency, **options):
            return start_worker(concurrency=concurrency, module=module, **options)

        return start

    return fixture


app = app_fixture("tests.apps.basic")


class WorkerProcess:
    """``python -m fastq -A <module> worker`` as a real subprocess."""

    def __init__(self, module: str, concurrency: int, queues: str, name: str, extra: list[str],
                 env: dict[str, str]):
        self.name = name
        self.concurrency = concurrency
        self.log = tempfile.NamedTemporaryFile(prefix=f"fastq-{name}-", suffix=".log", delete=False)
        cmd = [sys.executable, "-m", "fastq", "-A", module, "worker", "-c", str(concurrency),
               "-Q", queues, "-n", name, "-l", "info", *extra]
        full_env = {**os.environ, "PYTHONPATH": str(ROOT), **env}
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=full_env,
                                     cwd=str(ROOT))

    def output(self) -> str:
        return Path(self.log.name).read_text()

    def child_pids(self, client: redis.Redis) -> dict[int, int]:
        """slot -> pid, from the children's heartbeats."""
        import msgpack

        out = {}
        for slot in range(self.concurrency):
            raw = client.get(keys.worker(f"{self.name}:{slot}"))
            if raw:
                out[slot] = msgpack.unpackb(raw)["pid"]
        return out

    def wait_ready(self, client: redis.Redis, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while len(self.child_pids(client)) < self.concurrency:
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited early:\n{self.output()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"worker not ready in {timeout}s:\n{self.output()}")
            time.sleep(0.05)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


@pytest.fixture
def start_worker(r):
    """Factory: ``start_worker(concurrency=2, queues="default", name=None)``; stopped at teardown."""
    workers: list[WorkerProcess] = []

    def start(concurrency: int = 2, queues: str = "default", name: str | None = None,
              module: str = "tests.apps.basic", extra: list[str] | None = None,
              env: dict[str, str] | None = None, wait: bool = True) -> WorkerProcess:
        name = name or f"w{len(workers)}-{os.getpid()}"
        w = WorkerProcess(module, concurrency, queues, name, extra or [], env or {})
        workers.append(w)
        if wait:
            w.wait_ready(r)
        return w

    yield start
    for w in workers:
        if w.proc.poll() is None:
            w.stop(signal.SIGKILL)
        # Children die with a supervisor killed by SIGKILL only once they notice; kill stragglers.
        for pid in w.child_pids(r).values():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def wait_for(predicate, timeout: float = 30, interval: float = 0.05, message: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)
