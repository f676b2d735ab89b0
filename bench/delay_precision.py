#!/usr/bin/env python
"""How punctually do countdown tasks start? fastq vs Celery 5 on the same Redis.

    PYTHONPATH=. python bench/delay_precision.py [-n 500] [--rate 50] [--countdown 1.0]
                                                 [-c 2] [--only fastq|celery]

For each system: start a real worker (``python -m fastq -A bench.bench_delay_app worker -c 2 -n
delaybench``, ``python -m celery -A bench.bench_delay_celery_app worker -c 2 ...``), send N tasks
with ``countdown`` spread over time (``--rate`` per second), each carrying its intended due time
(send time + countdown); the task records ``time.time()`` as its first statement. The error is
start - due, in ms (negative = early). Printed as a markdown table: min, p50, p90, p99, max.

Redis: ``FASTQ_BROKER_URL`` if set (only this bench's keys are deleted there), else a private
``redis-server`` on a free port without persistence. Workers run in their own sessions and are
stopped (SIGTERM, then SIGKILL of the group) at exit, also on Ctrl-C or an error.
"""
from __future__ import annotations

import argparse
import atexit
import contextlib
import importlib
import math
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
QUEUE = "delaybench"
WORKER_NAME = "delaybench"
WARMUP = 10  # tasks sent (and waited for) before the measured ones: pool start, connections

_procs: list[subprocess.Popen] = []
_logs: list[Path] = []


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# -- processes ----------------------------------------------------------------------------------
def spawn(cmd: list[str], env: dict[str, str], logname: str, workdir: Path) -> subprocess.Popen:
    logfile = workdir / logname
    _logs.append(logfile)
    with open(logfile, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=str(ROOT),
                                start_new_session=True)
    _procs.append(proc)
    return proc


def stop(proc: subprocess.Popen, grace: float = 20.0) -> None:
    """SIGTERM, then SIGKILL of its process group after ``grace`` s; then anything left in it."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            log(f"pid {proc.pid} ignored SIGTERM for {grace:.0f} s: SIGKILL")
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)  # the worker's children, if any outlived it
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(5)
    if proc in _procs:
        _procs.remove(proc)


def stop_all() -> None:
    for proc in reversed(list(_procs)):  # workers first, the private Redis (started first) last
        stop(proc, grace=10.0)


def _on_signal(signum, _frame):
    raise KeyboardInterrupt(f"signal {signum}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what}: the process exited with {proc.returncode} "
                               f"(log: {_logs[-1] if _logs else '-'})")
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.02)


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False


def private_redis(workdir: Path) -> str:
    exe = shutil.which("redis-server")
    if exe is None:
        raise SystemExit("redis-server is not on PATH (or set FASTQ_BROKER_URL)")
    port = free_port()
    rdir = workdir / "redis"
    rdir.mkdir()
    proc = spawn([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
                  "no", "--dir", str(rdir), "--logfile", str(rdir / "redis.log")],
                 dict(os.environ), "redis-server.out", workdir)
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    wait_until(lambda: _pings(client), 10, "the private redis-server", proc)
    client.close()
    return url


# -- the two systems ----------------------------------------------------------------------------
def worker_env(url: str) -> dict[str, str]:
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "BENCH_REDIS_URL": url, "FASTQ_BROKER_URL": url,
            "PYTHONPATH": f"{path}{os.pathsep}{ROOT}" if path else str(ROOT)}


def start_fastq(url: str, r: redis.Redis, concurrency: int, workdir: Path) -> subprocess.Popen:
    proc = spawn([sys.executable, "-m", "fastq", "-A", "bench.bench_delay_app", "worker",
                  "-c", str(concurrency), "-n", WORKER_NAME, "-Q", QUEUE, "-l", "warning"],
                 worker_env(url), "fastq-worker.log", workdir)
    beats = [f"fastq:w:{WORKER_NAME}:{slot}" for slot in range(concurrency)]
    wait_until(lambda: r.exists(*beats) == concurrency, 60, "the fastq worker's children", proc)
    return proc


def start_celery(url: str, r: redis.Redis, concurrency: int, workdir: Path) -> subprocess.Popen:
    from bench import bench_delay_celery_app as capp

    r.delete(capp.READY_KEY)
    proc = spawn([sys.executable, "-m", "celery", "-A", "bench.bench_delay_celery_app", "worker",
                  "-c", str(concurrency), "--pool", "prefork", "-Q", QUEUE,
                  "-n", f"{WORKER_NAME}@%h", "--loglevel", "WARNING", "--without-gossip",
                  "--without-mingle"],
                 worker_env(url), "celery-worker.log", workdir)
    wait_until(lambda: r.exists(capp.READY_KEY), 60, "the Celery worker (worker_ready)", proc)
    return proc


def send_paced(task, n: int, rate: float, countdown: float, first: int = 0) -> float:
    """Send ``task(i, due)`` for i in [first, first + n) at ``rate`` per second, each with
    ``countdown``; returns the seconds sending took."""
    start = time.perf_counter()
    for k in range(n):
        target = start + k / rate
        pause = target - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
        due = time.time() + countdown
        task.apply_async((first + k, due), countdown=countdown)
    return time.perf_counter() - start


def collect(r: redis.Redis, key: str, indices: range, timeout: float) -> list[float]:
    """Start errors (ms) of the tasks ``indices``, once all have recorded their start."""
    wait_until(lambda: r.hlen(key) >= len(indices), timeout,
               f"{len(indices)} task starts in {key} (have {r.hlen(key)})")
    raw = r.hgetall(key)
    errors = []
    for i in indices:
        started, due = map(float, raw[str(i).encode()].split(b","))
        errors.append((started - due) * 1000.0)
    return errors


def measure(system: str, url: str, r: redis.Redis, args, workdir: Path) -> list[float]:
    if system == "fastq":
        module = importlib.import_module("bench.bench_delay_app")
        start = start_fastq
    else:
        module = importlib.import_module("bench.bench_delay_celery_app")
        start = start_celery
    key = module.RESULTS_KEY
    r.delete(key)
    log(f"{system}: starting the worker (-c {args.concurrency})")
    proc = start(url, r, args.concurrency, workdir)
    try:
        wait = args.countdown + 30
        send_paced(module.record, WARMUP, args.rate, args.countdown, first=-WARMUP)
        collect(r, key, range(-WARMUP, 0), wait)
        r.delete(key)
        log(f"{system}: sending {args.n} tasks at {args.rate:g}/s with countdown={args.countdown:g}")
        took = send_paced(module.record, args.n, args.rate, args.countdown)
        log(f"{system}: sent in {took:.2f} s; waiting for them to run")
        errors = collect(r, key, range(args.n), args.countdown + 60)
        if proc.poll() is not None:
            raise RuntimeError(f"the {system} worker died (log: {_logs[-1]})")
        return errors
    finally:
        log(f"{system}: stopping the worker")
        stop(proc)


# -- report -------------------------------------------------------------------------------------
def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of a sorted list."""
    return sorted_values[max(0, math.ceil(q / 100 * len(sorted_values)) - 1)]


def row(name: str, errors: list[float]) -> str:
    s = sorted(errors)
    cells = [s[0], percentile(s, 50), percentile(s, 90), percentile(s, 99), s[-1]]
    return f"| {name} | {len(s)} | " + " | ".join(f"{v:.1f}" for v in cells) + " |"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", type=int, default=500, help="tasks per system (default 500)")
    parser.add_argument("--rate", type=float, default=50.0, help="tasks sent per second (50)")
    parser.add_argument("--countdown", type=float, default=1.0, help="seconds (1.0)")
    parser.add_argument("-c", "--concurrency", type=int, default=2, help="worker processes (2)")
    parser.add_argument("--only", choices=["fastq", "celery"], default=None)
    args = parser.parse_args()

    if str(ROOT) not in sys.path:
        sys.path.append(str(ROOT))  # `bench.*` task modules; an earlier PYTHONPATH entry wins
    signal.signal(signal.SIGTERM, _on_signal)
    atexit.register(stop_all)
    workdir = Path(tempfile.mkdtemp(prefix="fastq-delaybench-"))
    external = os.environ.get("FASTQ_BROKER_URL")
    try:
        url = external or private_redis(workdir)
        os.environ["BENCH_REDIS_URL"] = url  # read by the task modules when imported below
        r = redis.Redis.from_url(url)
        # Leftovers of an earlier run on a shared Redis: this bench's keys only.
        stale = list(r.scan_iter(match="fastq:{delaybench}:*")) + \
            list(r.scan_iter(match="bench:delay:*"))
        if stale:
            r.delete(*stale)
        systems = [args.only] if args.only else ["fastq", "celery"]
        results = {s: measure(s, url, r, args, workdir) for s in systems}
    except KeyboardInterrupt:
        log("interrupted; stopping everything")
        return 130
    finally:
        stop_all()

    import celery

    import fastq

    names = {"fastq": f"fastq {getattr(fastq, '__version__', '')}".strip(),
             "celery": f"Celery {celery.__version__}"}
    print(f"Start-time error of countdown tasks: start - (send time + countdown), in ms. "
          f"N={args.n} per system, sent at {args.rate:g}/s, countdown={args.countdown:g} s, "
          f"worker -c {args.concurrency}, {'FASTQ_BROKER_URL' if external else 'private'} Redis, "
          f"Python {platform.python_version()} on {platform.machine()} "
          f"({os.cpu_count()} CPUs).\n")
    print("| system | tasks | min | p50 | p90 | p99 | max |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for system, errors in results.items():
        print(row(names[system], errors))
    shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
