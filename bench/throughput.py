#!/usr/bin/env python
"""fastq vs Celery 5 on the same (private) Redis: the same workloads, one table.

    PYTHONPATH=/work/main python bench/throughput.py [--quick] [--only fastq|celery] [-n N]
                                                     [--markdown-out FILE] [--keep-logs]

Measurements (bench/README.md explains each):
  (a) enqueue rate, one ``.delay()`` at a time, no worker running
  (b) drain rate of tasks already queued, worker -c 2 and -c 8, results ignored and stored
  (c) round-trip latency of ``.delay(x).get()`` on an idle worker (-c 2)
  (d) batch enqueue rate (fastq ``Task.map``; Celery ``group().apply_async()`` and a producer loop)
  (e) worker memory (supervisor + children): peak summed RSS and PSS during the -c 2 drain

Progress goes to stderr; the report (markdown) to stdout, and to ``--markdown-out`` if given.
"""
from __future__ import annotations

import argparse
import contextlib
import math
import os
import platform
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import redis

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
QUEUE = "bench"  # both apps' default queue (see bench_fastq_app.py, bench_celery_app.py)
READY_TIMEOUT_S = 60.0
STOP_GRACE_S = 20.0
ROUNDTRIP_TIMEOUT_S = 10.0
ENQUEUE_WARMUP = 100  # sends before the timed (a) loop: connection set-up, queue declaration


class BenchError(Exception):
    """A measurement could not complete (timeout, dead worker, wrong counts)."""


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# -- timing helpers --------------------------------------------------------------------------------
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


# -- sizes -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Sizes:
    enqueue: int  # (a), both systems
    drain: dict[str, int]  # (b), per system
    latency_samples: int  # (c)
    latency_warmup: int
    batch: dict[str, int]  # (d), per system

    @classmethod
    def for_run(cls, n: int, quick: bool) -> Sizes:
        return cls(enqueue=n,
                   drain={"fastq": n, "Celery": max(n // 4, 1)},
                   latency_samples=200 if quick else 1000,
                   latency_warmup=20 if quick else 100,
                   batch={"fastq": 5 * n, "Celery": n})


# -- the private Redis -----------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PrivateRedis:
    """``redis-server --port <free> --save '' --appendonly no`` for this run, stopped on exit."""

    def __init__(self, workdir: Path):
        self.exe = shutil.which("redis-server")
        if self.exe is None:
            raise SystemExit("redis-server is not on PATH")
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.dir = workdir / "redis"
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> PrivateRedis:
        self.dir.mkdir()
        self.proc = subprocess.Popen(
            [self.exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.dir), "--logfile", str(self.dir / "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        client = redis.Redis.from_url(self.url)
        wait_until(lambda: _pings(client), 10, "the private redis-server", interval=0.02)
        client.close()
        return self

    def __exit__(self, *_exc) -> None:
        if self.proc is not None:
            stop_process(self.proc, grace=5)


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False


def reset(r: redis.Redis) -> None:
    """Delete every key but kombu's exchange bindings (a Celery producer caches that it declared
    its queue; without ``_kombu.binding.bench`` its messages would be routed nowhere)."""
    doomed = [k for k in r.scan_iter(count=10_000) if not k.startswith(b"_kombu.binding.")]
    for i in range(0, len(doomed), 10_000):
        r.delete(*doomed[i:i + 10_000])


def count_existing(r: redis.Redis, keys: list) -> int:
    return sum(r.exists(*keys[i:i + 10_000]) for i in range(0, len(keys), 10_000))


# -- processes and memory --------------------------------------------------------------------------
@contextlib.contextmanager
def signals_deferred():
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


class Worker:
    """A worker subprocess in its own session (so Ctrl-C reaches only the bench, which stops it)."""

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


# -- one adapter per system ------------------------------------------------------------------------
class FastqSystem:
    name = "fastq"

    def __init__(self) -> None:
        import bench_fastq_app as m

        from fastq import _core, keys

        self.app = m.app
        self.keys = keys
        self.implementation = _core.IMPLEMENTATION
        self.tasks = {"noop": m.noop, "noop_stored": m.noop_stored, "echo": m.echo}

    def settings(self) -> str:
        c = self.app.conf
        return (f"fastq worker (supervisor + forked children), serializer {c.serializer}, "
                f"prefetch {c.prefetch} per stream, flush_ms {c.flush_ms}, block_ms {c.block_ms}, "
                f"result_expires {c.result_expires:.0f} s, core {self.implementation}; "
                f"results in the broker's Redis")

    def worker_cmd(self, concurrency: int, hostname: str) -> list[str]:
        return [sys.executable, "-m", "fastq", "-A", "bench_fastq_app", "worker",
                "-c", str(concurrency), "-Q", QUEUE, "-n", hostname, "-l", "warning"]

    def is_ready(self, r: redis.Redis, concurrency: int, hostname: str) -> bool:
        """Every child has written its heartbeat key ``fastq:w:<hostname>:<slot>``."""
        beats = list(r.scan_iter(match=self.keys.worker(f"{hostname}:*"), count=10_000))
        return len(beats) >= concurrency

    def depth(self, r: redis.Redis) -> int:
        """Entries in the queue's streams: ready plus delivered-but-unacked (acked ones are XDELed)."""
        pipe = r.pipeline(transaction=False)
        for key in self.keys.streams(QUEUE):
            pipe.xlen(key)
        return sum(pipe.execute())

    def result_key(self, task_id: str) -> str:
        return self.keys.result(task_id)

    def hold(self, r: redis.Redis) -> list[tuple[str, str]]:
        """Move the queued streams aside (with the consumer group a worker would have created),
        so a worker can start and get ready on an empty queue. Returns (held, real) key pairs."""
        moved = []
        for key in self.keys.streams(QUEUE):
            if r.xlen(key):
                held = f"bench:held:{key}"
                r.rename(key, held)
                r.xgroup_create(held, self.keys.GROUP, "0")
                moved.append((held, key))
        return moved

    def send_one(self, task, arg) -> str:
        return task.delay(arg).id

    def batch_methods(self) -> dict[str, Callable]:
        return {"Task.map": lambda task, n: [res.id for res in task.map(range(n))]}

    def prefill(self, task_name: str, n: int) -> list[str]:
        return [res.id for res in self.tasks[task_name].map(range(n))]

    def roundtrip(self, value):
        return self.tasks["echo"].delay(value).get(timeout=ROUNDTRIP_TIMEOUT_S)

    def state(self, task_id: str) -> str:
        return self.app.AsyncResult(task_id).state

    def close(self) -> None:
        self.app.close()


class CelerySystem:
    name = "Celery"

    def __init__(self) -> None:
        import bench_celery_app as m
        from celery import Celery, group

        self.app = m.app
        self.ready_key = m.READY_KEY
        self.group = group
        self.tasks = {"noop": m.noop, "noop_stored": m.noop_stored, "echo": m.echo}
        # Pre-filling (b) goes through an app without a result backend: the Redis backend would
        # otherwise SUBSCRIBE this process to every task's result channel, and the unread
        # messages would pile up in Redis for the rest of the run. The worker stores results
        # regardless (the task does not ignore them).
        self.producer_app = Celery("bench-prefill", broker=m.URL)
        self.producer_app.conf.update(task_default_queue=QUEUE,
                                      broker_connection_retry_on_startup=True)

    def settings(self) -> str:
        c = self.app.conf
        return (f"celery worker --pool prefork, Redis broker + Redis result backend, "
                f"task_serializer {c.task_serializer}, result_serializer {c.result_serializer}, "
                f"worker_prefetch_multiplier {c.worker_prefetch_multiplier}, "
                f"task_acks_late {c.task_acks_late}, result_expires {c.result_expires}, "
                f"worker_send_task_events {c.worker_send_task_events}, gossip/mingle/heartbeat on "
                f"(defaults); all defaults except the queue name")

    def worker_cmd(self, concurrency: int, hostname: str) -> list[str]:
        return [sys.executable, "-m", "celery", "-A", "bench_celery_app", "worker",
                "-c", str(concurrency), "--pool", "prefork", "-Q", QUEUE, "-n", f"{hostname}@%h",
                "--loglevel", "WARNING"]

    def is_ready(self, r: redis.Redis, concurrency: int, hostname: str) -> bool:
        """The ``worker_ready`` signal handler in bench_celery_app.py has set the ready key."""
        return bool(r.exists(self.ready_key))

    def depth(self, r: redis.Redis) -> int:
        """Messages in the queue's list plus those delivered to a worker and not yet acked."""
        pipe = r.pipeline(transaction=False)
        pipe.llen(QUEUE)
        pipe.hlen("unacked")
        return sum(pipe.execute())

    def result_key(self, task_id: str) -> bytes:
        return self.app.backend.get_key_for_task(task_id)

    def hold(self, r: redis.Redis) -> list[tuple[str, str]]:
        """Move the queue's list aside so the worker can start and get ready on an empty queue."""
        r.rename(QUEUE, "bench:held")
        return [("bench:held", QUEUE)]

    def send_one(self, task, arg) -> str:
        return task.delay(arg).id

    def batch_methods(self) -> dict[str, Callable]:
        return {"group().apply_async()": self._send_group, "apply_async loop in producer_or_acquire()":
                self._send_in_producer}

    def _send_group(self, task, n: int) -> list[str]:
        return [res.id for res in self.group(task.s(i) for i in range(n)).apply_async().results]

    def _send_in_producer(self, task, n: int) -> list[str]:
        with self.app.producer_or_acquire() as producer:
            return [task.apply_async((i,), producer=producer).id for i in range(n)]

    def prefill(self, task_name: str, n: int) -> list[str]:
        name = self.tasks[task_name].name
        with self.producer_app.producer_or_acquire() as producer:
            return [self.producer_app.send_task(name, (i,), producer=producer).id
                    for i in range(n)]

    def roundtrip(self, value):
        return self.tasks["echo"].delay(value).get(timeout=ROUNDTRIP_TIMEOUT_S)

    def state(self, task_id: str) -> str:
        return self.app.AsyncResult(task_id).state

    def close(self) -> None:
        self.app.close()
        self.producer_app.close()


# -- the report ------------------------------------------------------------------------------------
@dataclass
class Row:
    label: str
    unit: str
    values: dict[str, float] = field(default_factory=dict)
    sizes: dict[str, str] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)


@dataclass
class Report:
    systems: list[str]
    rows: dict[str, Row] = field(default_factory=dict)
    details: list[str] = field(default_factory=list)  # supporting numbers
    problems: list[str] = field(default_factory=list)  # errors, timeouts, unclean exits

    def row(self, key: str, label: str, unit: str) -> Row:
        if key not in self.rows:
            self.rows[key] = Row(label, unit)
        return self.rows[key]

    def fail(self, key: str, system: str, exc: BaseException) -> None:
        self.rows[key].errors[system] = type(exc).__name__
        self.problems.append(f"{system}, {self.rows[key].label}: {type(exc).__name__}: {exc}")


def fmt(value: float, unit: str) -> str:
    if unit == "tasks/s":
        return f"{value:,.0f}"
    return f"{value:,.2f}" if unit == "ms" else f"{value:,.1f}"


def render_table(report: Report) -> str:
    names = report.systems
    both = len(names) == 2
    head = ["measurement", "unit", *names] + (["fastq/Celery"] if both else []) + ["N"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in report.rows.values():
        cells = []
        for name in names:
            if name in row.values:
                cells.append(fmt(row.values[name], row.unit))
            else:
                cells.append(f"error ({row.errors[name]})" if name in row.errors else "-")
        if both:
            a, b = (row.values.get(n) for n in names)
            cells.append(f"{a / b:.2f}x" if a and b else "-")
        sizes = " / ".join(row.sizes.get(n, "-") for n in names)
        lines.append("| " + " | ".join([row.label, row.unit, *cells, sizes]) + " |")
    return "\n".join(lines)


# -- the measurements, one function each ----------------------------------------------------------
def expect_depth(system, r: redis.Redis, expected: int, what: str) -> None:
    depth = system.depth(r)
    if depth != expected:
        raise BenchError(f"{what}: queue depth {depth}, expected {expected}")


def measure_enqueue(system, r: redis.Redis, n: int) -> float:
    """(a) tasks/s of ``noop.delay(i)``, one call at a time, nothing consuming."""
    reset(r)
    task = system.tasks["noop"]
    for i in range(ENQUEUE_WARMUP):
        system.send_one(task, i)
    seconds = timed(lambda: [system.send_one(task, i) for i in range(n)])
    expect_depth(system, r, n + ENQUEUE_WARMUP, "after enqueue")
    return n / seconds


def measure_raw_redis(r: redis.Redis, n: int) -> tuple[float, float]:
    """The ceiling of (a) and (d) on this machine: plain redis-py + hiredis, ``n`` XADDs of a
    60-byte value one round trip at a time, then 5n in one pipeline (tasks/s each)."""
    reset(r)
    value = b"x" * 60
    single = n / timed(lambda: [r.execute_command("XADD", "bench:raw", "*", "m", value)
                                for _ in range(n)])

    def pipelined():
        pipe = r.pipeline(transaction=False)
        for _ in range(5 * n):
            pipe.execute_command("XADD", "bench:raw", "*", "m", value)
        pipe.execute()

    batch = 5 * n / timed(pipelined)
    reset(r)
    return single, batch


def measure_batch(system, r: redis.Redis, n: int) -> dict[str, float]:
    """(d) tasks/s of each batch-sending method the system has, nothing consuming."""
    rates = {}
    task = system.tasks["noop"]
    for method, send in system.batch_methods().items():
        reset(r)
        send(task, 10)  # warm-up: connection, queue declaration
        seconds = timed(send, task, n)
        expect_depth(system, r, n + 10, f"after {method}")
        rates[method] = n / seconds
    return rates


@dataclass
class Run:
    """What the worker-running measurements share: the Redis, env, and where logs and problems go."""
    r: redis.Redis
    env: dict[str, str]
    logdir: Path
    problems: list[str]

    def worker(self, system, concurrency: int, label: str) -> tuple[Worker, str]:
        hostname = f"bench-{uuid.uuid4().hex[:8]}"
        cmd = system.worker_cmd(concurrency, hostname)
        log_path = self.logdir / f"{system.name}-{label}.log"
        return Worker(cmd, self.env, log_path, self.problems), hostname

    def wait_ready(self, system, worker: Worker, concurrency: int, hostname: str) -> float:
        def ready() -> bool:
            worker.check_alive()
            return system.is_ready(self.r, concurrency, hostname)

        return wait_until(ready, READY_TIMEOUT_S, f"{system.name} worker ready")


def measure_latency(system, run: Run, samples: int, warmup: int) -> list[float]:
    """(c) sorted round-trip times in ms of ``echo.delay(i).get()``, -c 2 worker, idle."""
    reset(run.r)
    worker, hostname = run.worker(system, 2, "latency")
    with worker:
        run.wait_ready(system, worker, 2, hostname)
        for i in range(warmup):
            system.roundtrip(i)
        times = []
        for i in range(samples):
            start = now()
            value = system.roundtrip(i)
            times.append((now() - start) * 1000)
            if value != i:
                raise BenchError(f"echo({i}) returned {value!r}")
    return sorted(times)


def release(r: redis.Redis, held: list[tuple[str, str]]) -> None:
    """Put held queue keys back in one MULTI. RENAME wakes the worker's blocked XREADGROUP/BRPOP
    at once, so all N messages appear together in front of a warm, idle worker."""
    pipe = r.pipeline(transaction=True)
    for held_key, key in held:
        pipe.rename(held_key, key)
    pipe.execute()


@dataclass
class Drain:
    rate: float  # tasks/s from release to done
    seconds: float
    peak_rss_kib: int
    peak_pss_kib: int
    procs: int
    stop_seconds: float


def measure_drain(system, run: Run, concurrency: int, stored: bool, n: int) -> Drain:
    """(b)+(e) tasks/s for N queued no-op tasks: the clock starts once the worker is ready (its
    queue held aside until then, see ``hold``/``release``) and stops when the queue is empty and,
    when results are stored, every result exists."""
    r = run.r
    reset(r)
    ids = system.prefill("noop_stored" if stored else "noop", n)
    expect_depth(system, r, n, "after prefill")
    held = system.hold(r)
    result_keys = [system.result_key(i) for i in ids] if stored else []
    timeout = 30 + n / 200
    worker, hostname = run.worker(system, concurrency,
                                  f"drain-c{concurrency}-{'stored' if stored else 'ignored'}")
    with worker, MemorySampler(worker.pid) as memory:
        run.wait_ready(system, worker, concurrency, hostname)
        expect_depth(system, r, 0, "worker ready, queue held")
        start = now()
        release(r, held)

        def empty() -> bool:
            worker.check_alive()
            return system.depth(r) == 0

        end = wait_until(empty, timeout, f"{system.name} queue empty", interval=0.002)
        if stored:
            end = wait_until(lambda: count_existing(r, result_keys) == n, timeout,
                             f"all {n} {system.name} results", interval=0.002)
    if stored:  # the results are real outcomes, not failures
        states = {system.state(ids[0]), system.state(ids[-1])}
        if states != {"SUCCESS"}:
            raise BenchError(f"stored results in state {states}, expected SUCCESS")
    seconds = end - start
    return Drain(n / seconds, seconds, memory.peak_rss_kib, memory.peak_pss_kib,
                 memory.max_procs, worker.stop_seconds)


# -- running it all --------------------------------------------------------------------------------
def scan_worker_logs(logdir: Path, problems: list[str]) -> None:
    """Report worker log lines that look like trouble (the bench runs workers at WARNING)."""
    pattern = re.compile(r"traceback|error|exception|critical|lost|killed|restart", re.I)
    benign = re.compile(r"security", re.I)  # Celery's "running as root" SecurityWarning
    for path in sorted(logdir.glob("*.log")):
        bad = [line.strip() for line in path.read_text(errors="replace").splitlines()
               if pattern.search(line) and not benign.search(line)]
        if bad:
            problems.append(f"{path.name}: {len(bad)} suspicious log line(s), first: {bad[0][:300]}")


def run_phase(report: Report, key: str, system, fn: Callable, *args):
    """Run one measurement; on failure record it in the report and carry on with the next."""
    log(f"{system.name}: {report.rows[key].label} ...")
    try:
        return fn(*args)
    except Exception as exc:  # noqa: BLE001 - any failure is reported, the next phase runs
        report.fail(key, system.name, exc)
        log(f"  failed: {exc}")
        return None


def define_rows(report: Report, sizes: Sizes) -> None:
    names = report.systems
    report.row("a", "(a) enqueue, `.delay()` one at a time", "tasks/s").sizes = \
        {s: f"{sizes.enqueue:,}" for s in names}
    for c in (2, 8):
        for stored in (False, True):
            label = f"(b) drain -c {c}, results {'stored' if stored else 'ignored'}"
            report.row(f"b{c}{stored}", label, "tasks/s").sizes = \
                {s: f"{sizes.drain[s]:,}" for s in names}
    for q in (50, 90, 99):
        report.row(f"c{q}", f"(c) round trip `.delay(x).get()` p{q}, -c 2", "ms").sizes = \
            {s: f"{sizes.latency_samples:,}" for s in names}
    report.row("d", "(d) batch enqueue (fastq `Task.map`; Celery: best method)", "tasks/s").sizes = \
        {s: f"{sizes.batch[s]:,}" for s in names}
    report.row("e_rss", "(e) worker -c 2 peak RSS, sum of processes", "MiB")
    report.row("e_pss", "(e) worker -c 2 peak PSS, sum of processes", "MiB")


def run_all(systems: list, run: Run, sizes: Sizes, report: Report) -> None:
    """Phase by phase, each system in turn, so slow drift of a shared machine hits both alike."""
    single, batch = measure_raw_redis(run.r, sizes.enqueue)
    report.details.append(f"raw redis-py+hiredis on the same Redis (the ceiling of (a) and (d)): "
                          f"XADD one at a time {single:,.0f}/s, pipelined {batch:,.0f}/s")
    for system in systems:
        rate = run_phase(report, "a", system, measure_enqueue, system, run.r, sizes.enqueue)
        if rate is not None:
            report.rows["a"].values[system.name] = rate
    for system in systems:
        rates = run_phase(report, "d", system, measure_batch, system, run.r,
                          sizes.batch[system.name])
        if rates:
            best = max(rates, key=rates.get)
            report.rows["d"].values[system.name] = rates[best]
            report.details.append(f"{system.name} batch enqueue: " + ", ".join(
                f"{m} {v:,.0f}/s" for m, v in rates.items()) + f" (table shows {best})")
    for system in systems:
        times = run_phase(report, "c50", system, measure_latency, system, run,
                          sizes.latency_samples, sizes.latency_warmup)
        for q in (50, 90, 99):
            if times:
                report.rows[f"c{q}"].values[system.name] = percentile(times, q)
            elif times is None:
                report.rows[f"c{q}"].errors[system.name] = report.rows["c50"].errors[system.name]
        if times:
            report.details.append(f"{system.name} round trip: min {times[0]:.2f} ms, max "
                                f"{times[-1]:.2f} ms, mean {sum(times) / len(times):.2f} ms")
    for c in (2, 8):
        for stored in (False, True):
            for system in systems:
                key = f"b{c}{stored}"
                drain = run_phase(report, key, system, measure_drain, system, run, c, stored,
                                  sizes.drain[system.name])
                if drain is None:
                    continue
                report.rows[key].values[system.name] = drain.rate
                report.details.append(
                    f"{system.name} drain -c {c} {'stored' if stored else 'ignored'}: "
                    f"{sizes.drain[system.name]:,} tasks in {drain.seconds:.3f} s; "
                    f"peak RSS {drain.peak_rss_kib / 1024:.1f} MiB, PSS "
                    f"{drain.peak_pss_kib / 1024:.1f} MiB over {drain.procs} processes; "
                    f"SIGTERM to exit {drain.stop_seconds:.2f} s")
                if c == 2 and stored:
                    report.rows["e_rss"].values[system.name] = drain.peak_rss_kib / 1024
                    report.rows["e_pss"].values[system.name] = drain.peak_pss_kib / 1024
                    report.rows["e_rss"].sizes[system.name] = f"{drain.procs} procs"
                    report.rows["e_pss"].sizes[system.name] = f"{drain.procs} procs"


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


def machine_info(redis_exe: str, systems: list) -> list[str]:
    version = subprocess.run([redis_exe, "--version"], capture_output=True, text=True).stdout
    import celery
    import kombu

    try:
        import hiredis

        hiredis_v = hiredis.__version__
    except ImportError:
        hiredis_v = "not installed"
    import fastq
    from fastq import _core

    return [
        f"nproc {os.cpu_count()} (usable {len(os.sched_getaffinity(0))}), "
        f"loadavg at start {' '.join(f'{x:.2f}' for x in os.getloadavg())}",
        f"{platform.platform()}; Python {platform.python_version()} ({sys.executable})",
        version.strip(),
        f"fastq._core.IMPLEMENTATION = {_core.IMPLEMENTATION} (fastq from "
        f"{Path(fastq.__file__).parent}{git_state(Path(fastq.__file__).parent)})",
        f"celery {celery.__version__}, kombu {kombu.__version__}, redis-py {redis.__version__}, "
        f"hiredis {hiredis_v}",
    ]


def render_report(args_line: str, machine: list[str], systems: list, run_cmds: list[str],
                  report: Report, interrupted: bool) -> str:
    out = ["# fastq vs Celery: throughput bench", "", f"Command: `{args_line}`", "", "Machine:", ""]
    out += [f"- {line}" for line in machine]
    out += ["", "Settings:", ""] + [f"- {s.name}: {s.settings()}" for s in systems]
    out += ["", "Worker commands (hostname varies per run; cwd bench/):", ""]
    out += [f"- `{c}`" for c in run_cmds]
    out += ["", render_table(report), ""]
    out += ["Ratios are fastq/Celery: above 1 is better for fastq on tasks/s, below 1 is better on "
            "ms and MiB.", ""]
    if interrupted:
        out += ["**Interrupted: the table is partial.**", ""]
    if report.details:
        out += ["Details:", ""] + [f"- {n}" for n in report.details] + [""]
    out += ["Problems seen:", ""] + ([f"- {n}" for n in report.problems] or ["- none"]) + [""]
    return "\n".join(out)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="small sizes (N=2000, 200 latency samples): a smoke run")
    p.add_argument("--only", choices=["fastq", "celery"], help="run one system only")
    p.add_argument("-n", type=int, default=None,
                   help="base task count: (a) N both; (b) N fastq, N/4 Celery; (d) 5N fastq, N "
                        "Celery (default 20000, 2000 with --quick)")
    p.add_argument("--markdown-out", type=Path, help="also write the report to this file")
    p.add_argument("--keep-logs", action="store_true", help="keep worker logs even if all went well")
    return p.parse_args(argv)


def _raise_interrupt(_signum, _frame):
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    n = args.n or (2_000 if args.quick else 20_000)
    sizes = Sizes.for_run(n, args.quick)
    args_line = shlex.join(["python", *sys.argv]) if argv is None else shlex.join(argv)
    signal.signal(signal.SIGTERM, _raise_interrupt)  # a TERMed bench still stops its processes
    sys.path.insert(0, str(BENCH_DIR))
    sys.path.append(str(ROOT))  # after PYTHONPATH, so PYTHONPATH=<a copy of fastq> is honoured
    workdir = Path(tempfile.mkdtemp(prefix="fastq-bench-"))
    (workdir / "logs").mkdir()
    interrupted = False
    systems: list = []
    machine: list[str] = []
    report = Report(["fastq", "Celery"] if not args.only else
                    ["fastq" if args.only == "fastq" else "Celery"])
    define_rows(report, sizes)
    with contextlib.ExitStack() as stack:
        try:
            server = stack.enter_context(PrivateRedis(workdir))
            log(f"private redis-server on {server.url}")
            os.environ["BENCH_REDIS_URL"] = server.url
            os.environ["FASTQ_BROKER_URL"] = server.url
            env = dict(os.environ, PYTHONPATH=os.pathsep.join(
                p for p in (str(BENCH_DIR), os.environ.get("PYTHONPATH"), str(ROOT)) if p))
            if args.only in (None, "fastq"):
                systems.append(FastqSystem())
            if args.only in (None, "celery"):
                systems.append(CelerySystem())
            for s in systems:
                stack.callback(s.close)
            machine = machine_info(server.exe, systems)
            client = redis.Redis.from_url(server.url)
            stack.callback(client.close)
            run = Run(client, env, workdir / "logs", report.problems)
            run_all(systems, run, sizes, report)
        except KeyboardInterrupt:
            interrupted = True
            log("interrupted: stopping workers and redis")
    if not systems:
        return 1
    scan_worker_logs(workdir / "logs", report.problems)
    machine.append(f"loadavg at end {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    cmds = [shlex.join(s.worker_cmd(2, "<hostname>")).replace(sys.executable, "python")
            for s in systems]
    text = render_report(args_line, machine, systems, cmds, report, interrupted)
    print(text)
    if args.markdown_out:
        args.markdown_out.write_text(text)
    failed = interrupted or any(row.errors for row in report.rows.values())
    if args.keep_logs or failed or report.problems:
        log(f"worker logs kept in {workdir / 'logs'}")
        shutil.rmtree(workdir / "redis", ignore_errors=True)
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 130 if interrupted else (1 if failed else 0)


if __name__ == "__main__":
    sys.exit(main())
