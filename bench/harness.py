"""What every bench shares: the private Redis, worker subprocesses, memory sampling, timing.

Used by throughput.py and delay_precision.py (and the adapters in systems.py); it knows nothing of
any one system. Each worker runs in its own session, so Ctrl-C reaches only the bench, which stops
it: SIGTERM, then SIGKILL of its process group after a grace period, then anything left in it.
"""
from __future__ import annotations

import contextlib
import math
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import redis

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
READY_TIMEOUT_S = 60.0
STOP_GRACE_S = 20.0


class BenchError(Exception):
    """A measurement could not complete (timeout, dead worker, wrong counts)."""


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# -- timing ----------------------------------------------------------------------------------------
now = time.perf_counter


def timed(fn: Callable, *args) -> float:
    """Seconds ``fn(*args)`` took."""
    start = now()
    fn(*args)
    return now() - start


def wait_until(predicate: Callable[[], bool], timeout: float, what: str,
               interval: float = 0.005) -> float:
    """Poll ``predicate`` until true; return the time (``now()``) it was seen true."""
    deadline = now() + timeout
    while not predicate():
        if now() > deadline:
            raise BenchError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)
    return now()


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    return sorted_values[max(0, math.ceil(q / 100 * len(sorted_values)) - 1)]


# -- the private Redis -----------------------------------------------------------------------------
class Server(Protocol):
    url: str

    def stop(self) -> None: ...


def start_server() -> Server:
    """Start a private Redis on a free port, without persistence (fastq.testing.RedisServer);
    the caller ``stop()``s it, which also removes its directory."""
    # Imported here, not at the top: producer subprocesses of an older fastq checkout import this
    # module too (bench/fastq_producer.py), and that fastq may have no RedisServer.
    from fastq.testing import RedisServer

    return _Cleaned(RedisServer().start())


@dataclass
class _Cleaned:
    """A started server whose ``stop()`` also removes its directory."""

    server: object

    @property
    def url(self) -> str:
        return self.server.url

    def stop(self) -> None:
        self.server.cleanup()


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False


def server_version(r: redis.Redis) -> str:
    info = r.info("server")
    name = "Valkey" if "valkey_version" in info else "Redis"
    return f"{name} {info.get('valkey_version') or info['redis_version']}"


def reset(r: redis.Redis) -> None:
    """Delete every key but kombu's exchange bindings (a Celery producer caches that it declared
    its queue; without ``_kombu.binding.<queue>`` its messages would be routed nowhere)."""
    doomed = [k for k in r.scan_iter(count=10_000) if not k.startswith(b"_kombu.binding.")]
    for i in range(0, len(doomed), 10_000):
        r.delete(*doomed[i:i + 10_000])


def count_existing(r: redis.Redis, keys: list) -> int:
    return sum(r.exists(*keys[i:i + 10_000]) for i in range(0, len(keys), 10_000))


# -- processes -------------------------------------------------------------------------------------
def bench_env(first: list[str] | tuple[str, ...] = ()) -> dict[str, str]:
    """The environment for a bench subprocess: ``PYTHONPATH`` = bench/, then ``first`` (e.g. the
    checkout of another fastq), then the caller's ``PYTHONPATH``, then the repo root; so
    ``import fastq`` finds ``first``'s copy when given, else the one the bench itself runs."""
    parts = [str(BENCH_DIR), *first, os.environ.get("PYTHONPATH"), str(ROOT)]
    return dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in parts if p))


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold Ctrl-C / SIGTERM while stopping a process (so the stop runs to the end); re-raise
    KeyboardInterrupt afterwards if one came."""
    caught: list[int] = []
    old = {sig: signal.signal(sig, lambda signum, _f: caught.append(signum))
           for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
    if caught:
        raise KeyboardInterrupt


def interrupt_on_sigterm() -> None:
    """Make SIGTERM raise KeyboardInterrupt, so a TERMed bench still stops its processes."""
    def _raise(_signum, _frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _raise)


def stop_process(proc: subprocess.Popen, grace: float) -> tuple[float, list[str]]:
    """SIGTERM the process, SIGKILL its process group after ``grace`` s (it runs in its own
    session), and SIGKILL anything left in the group. Returns (seconds taken, problems seen)."""
    with signals_deferred():
        return _stop_process(proc, grace)


def _stop_process(proc: subprocess.Popen, grace: float) -> tuple[float, list[str]]:
    problems: list[str] = []
    start = now()
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            problems.append(f"did not exit within {grace:.0f} s of SIGTERM; SIGKILLed")
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    with contextlib.suppress(ProcessLookupError):
        leftovers = process_group(proc.pid)
        if leftovers:
            problems.append(f"processes {leftovers} still alive after it exited; SIGKILLed")
        os.killpg(proc.pid, signal.SIGKILL)
    return now() - start, problems


def _proc_stats() -> list[tuple[int, int, int]]:
    """(pid, ppid, pgid) of every process."""
    out = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                stat = Path(f"/proc/{entry.name}/stat").read_text()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            out.append((int(entry.name), int(fields[1]), int(fields[2])))
    return out


def process_group(pgid: int) -> list[int]:
    return [pid for pid, _ppid, group in _proc_stats() if group == pgid]


def process_tree(root: int) -> list[int]:
    """``root`` and all its descendants."""
    children: dict[int, list[int]] = {}
    for pid, ppid, _pgid in _proc_stats():
        children.setdefault(ppid, []).append(pid)
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


class Worker:
    """A worker subprocess (cwd bench/) in its own session; stopped on leaving the ``with``."""

    def __init__(self, cmd: list[str], env: dict[str, str], log_path: Path, problems: list[str]):
        self.cmd = cmd
        self.env = env
        self.log_path = log_path
        self.problems = problems  # where shutdown trouble is reported
        self.proc: subprocess.Popen | None = None
        self.stop_seconds = 0.0

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def __enter__(self) -> Worker:
        with open(self.log_path, "ab") as logf:
            self.proc = subprocess.Popen(self.cmd, cwd=BENCH_DIR, env=self.env, stdout=logf,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True)
        return self

    def __exit__(self, *_exc) -> None:
        if self.proc is None:
            return
        self.stop_seconds, problems = stop_process(self.proc, STOP_GRACE_S)
        self.problems.extend(f"{self.log_path.stem}: worker {p}" for p in problems)

    def check_alive(self) -> None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise BenchError(f"worker exited with code {self.proc.returncode} (log: {self.log_path})")


class System(Protocol):
    """What the harness needs of a system's adapter (systems.py) to run its worker."""
    name: str

    def worker_cmd(self, concurrency: int, hostname: str) -> list[str]: ...

    def worker_env(self) -> dict[str, str]: ...

    def clear_ready(self, r: redis.Redis) -> None: ...

    def is_ready(self, r: redis.Redis, concurrency: int, hostname: str) -> bool: ...


@dataclass
class Run:
    """What the worker-running measurements share: the Redis, where logs and problems go."""
    r: redis.Redis
    logdir: Path
    problems: list[str]

    def worker(self, system: System, concurrency: int, label: str) -> tuple[Worker, str]:
        """A (not yet started) worker of ``system`` under a fresh hostname, logging to logdir."""
        hostname = f"bench-{os.urandom(4).hex()}"
        system.clear_ready(self.r)
        log_path = self.logdir / f"{system.name}-{label}.log"
        return Worker(system.worker_cmd(concurrency, hostname), system.worker_env(), log_path,
                      self.problems), hostname

    def wait_ready(self, system: System, worker: Worker, concurrency: int, hostname: str) -> float:
        def ready() -> bool:
            worker.check_alive()
            return system.is_ready(self.r, concurrency, hostname)

        return wait_until(ready, READY_TIMEOUT_S, f"{system.name} worker ready", interval=0.02)


def scan_worker_logs(logdir: Path, problems: list[str]) -> None:
    """Report worker log lines that look like trouble (the benches run workers at WARNING)."""
    pattern = re.compile(r"traceback|error|exception|critical|lost|killed|restart", re.I)
    benign = re.compile(r"security", re.I)  # Celery's "running as root" SecurityWarning
    for path in sorted(logdir.glob("*.log")):
        bad = [line.strip() for line in path.read_text(errors="replace").splitlines()
               if pattern.search(line) and not benign.search(line)]
        if bad:
            problems.append(f"{path.name}: {len(bad)} suspicious log line(s), first: {bad[0][:300]}")


def git_state(package_dir: Path) -> str:
    """', git abc1234' (+ ', with uncommitted changes') when the package is in a git checkout."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(package_dir), *args], capture_output=True,
                              text=True).stdout.strip()

    sha = git("rev-parse", "--short", "HEAD")
    if not sha:
        return ""
    dirty = git("status", "--porcelain", "--", ".")
    return f", git {sha}" + (", with uncommitted changes" if dirty else "")


# -- memory ----------------------------------------------------------------------------------------
def rss_pss_kib(pid: int) -> tuple[int, int]:
    rss = pss = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Rss:"):
                    rss = int(line.split()[1])
                elif line.startswith("Pss:"):
                    pss = int(line.split()[1])
    except OSError:  # exited between listing and reading
        pass
    return rss, pss


class MemorySampler:
    """Samples summed RSS and PSS of a process tree every ``interval`` s; keeps the peaks.
    The tree (a /proc scan) is refreshed every 10th sample only, to keep the sampler cheap."""

    def __init__(self, root: int, interval: float = 0.1):
        self.root = root
        self.interval = interval
        self.peak_rss_kib = self.peak_pss_kib = self.max_procs = 0
        self._pids: list[int] = []
        self._samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self, refresh: bool = False) -> None:
        if refresh or self._samples % 10 == 0:
            self._pids = process_tree(self.root)
        self._samples += 1
        sizes = [rss_pss_kib(pid) for pid in self._pids]
        self.peak_rss_kib = max(self.peak_rss_kib, sum(s[0] for s in sizes))
        self.peak_pss_kib = max(self.peak_pss_kib, sum(s[1] for s in sizes))
        self.max_procs = max(self.max_procs, len(self._pids))

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self._stop.set()
        self._thread.join()
        self.sample(refresh=True)  # once more, after the drain
