#!/usr/bin/env python
"""How punctually do countdown tasks start? fastq vs Celery 5 on the same Redis.

    PYTHONPATH=. python bench/delay_precision.py [-n 500] [--rate 50] [--countdown 1.0]
                                                 [-c 2] [--only fastq|celery] [--quick]

For each system: start a real worker (``python -m fastq -A bench_delay_app worker -c 2 ...``,
``python -m celery -A bench_delay_celery_app worker -c 2 ...``, cwd bench/), send N tasks with
``countdown`` spread over time (``--rate`` per second), each carrying its intended due time (send
time + countdown); the task records ``time.time()`` as its first statement. The error is start -
due, in ms (negative = early). Printed as a markdown table: min, p50, p90, p99, max.

Redis: ``FASTQ_BROKER_URL`` if set (only this bench's keys are deleted there), else a private
``redis-server`` on a free port without persistence. Workers, adapters and the server come from
harness.py and systems.py, as for throughput.py: each worker runs in its own session and is
stopped (SIGTERM, then SIGKILL of the group) when its measurement ends, also on Ctrl-C or an error.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import redis
from harness import (
    ROOT,
    BenchError,
    Run,
    interrupt_on_sigterm,
    log,
    percentile,
    scan_worker_logs,
    start_server,
    wait_until,
)
from systems import CelerySystem, FastqSystem

QUEUE = "delaybench"
WARMUP = 10  # tasks sent (and waited for) before the measured ones: pool start, connections


def delay_systems(only: str | None) -> list:
    """The adapters of bench_delay_app.py / bench_delay_celery_app.py (imported after the Redis
    URL is set: the modules read it)."""
    out: list = []
    if only in (None, "fastq"):
        out.append(FastqSystem(app_module="bench_delay_app", queue=QUEUE))
    if only in (None, "celery"):
        out.append(CelerySystem(app_module="bench_delay_celery_app", queue=QUEUE,
                                worker_args=("--without-gossip", "--without-mingle")))
    return out


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


def collect(r: redis.Redis, key: str, indices: range, timeout: float, worker) -> list[float]:
    """Start errors (ms) of the tasks ``indices``, once all have recorded their start."""
    def all_started() -> bool:
        worker.check_alive()
        return r.hlen(key) >= len(indices)

    wait_until(all_started, timeout, f"{len(indices)} task starts in {key}", interval=0.02)
    raw = r.hgetall(key)
    errors = []
    for i in indices:
        started, due = map(float, raw[str(i).encode()].split(b","))
        errors.append((started - due) * 1000.0)
    return errors


def measure(system, run: Run, args) -> list[float]:
    record = system.module.record
    key = system.module.RESULTS_KEY
    run.r.delete(key)
    log(f"{system.name}: starting the worker (-c {args.concurrency})")
    worker, hostname = run.worker(system, args.concurrency, "worker")
    with worker:
        run.wait_ready(system, worker, args.concurrency, hostname)
        send_paced(record, WARMUP, args.rate, args.countdown, first=-WARMUP)
        collect(run.r, key, range(-WARMUP, 0), args.countdown + 30, worker)
        run.r.delete(key)
        log(f"{system.name}: sending {args.n} tasks at {args.rate:g}/s with "
            f"countdown={args.countdown:g}")
        took = send_paced(record, args.n, args.rate, args.countdown)
        log(f"{system.name}: sent in {took:.2f} s; waiting for them to run")
        errors = collect(run.r, key, range(args.n), args.countdown + 60, worker)
        log(f"{system.name}: stopping the worker")
    return errors


# -- report -------------------------------------------------------------------------------------
def row(name: str, errors: list[float]) -> str:
    s = sorted(errors)
    cells = [s[0], percentile(s, 50), percentile(s, 90), percentile(s, 99), s[-1]]
    return f"| {name} | {len(s)} | " + " | ".join(f"{v:.1f}" for v in cells) + " |"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", type=int, default=None,
                        help="tasks per system (default 500, 50 with --quick)")
    parser.add_argument("--rate", type=float, default=50.0, help="tasks sent per second (50)")
    parser.add_argument("--countdown", type=float, default=1.0, help="seconds (1.0)")
    parser.add_argument("-c", "--concurrency", type=int, default=2, help="worker processes (2)")
    parser.add_argument("--only", choices=["fastq", "celery"], default=None)
    parser.add_argument("--quick", action="store_true", help="a smoke run: N=50")
    args = parser.parse_args()
    args.n = args.n or (50 if args.quick else 500)

    sys.path.append(str(ROOT))  # fastq, after PYTHONPATH (an earlier entry wins)
    interrupt_on_sigterm()
    workdir = Path(tempfile.mkdtemp(prefix="fastq-delaybench-"))
    external = os.environ.get("FASTQ_BROKER_URL")
    problems: list[str] = []
    with contextlib.ExitStack() as stack:
        try:
            if external:
                url = external
            else:
                server = start_server()
                stack.callback(server.stop)
                url = server.url
            os.environ["BENCH_REDIS_URL"] = url  # read by the task modules and the workers
            os.environ["FASTQ_BROKER_URL"] = url
            r = redis.Redis.from_url(url)
            stack.callback(r.close)
            from fastq import keys

            # Leftovers of an earlier run on a shared Redis: this bench's keys only.
            stale = list(r.scan_iter(match=keys.queue_pattern(QUEUE))) + \
                list(r.scan_iter(match="bench:delay:*"))
            if stale:
                r.delete(*stale)
            systems = delay_systems(args.only)
            for system in systems:
                stack.callback(system.close)
            run = Run(r, workdir, problems)
            results = {s.name: measure(s, run, args) for s in systems}
        except KeyboardInterrupt:
            log("interrupted; stopping everything")
            return 130
        except BenchError as exc:
            log(f"failed: {exc} (logs kept in {workdir})")
            return 1
    scan_worker_logs(workdir, problems)

    import celery

    import fastq

    names = {"fastq": f"fastq {getattr(fastq, '__version__', '')}".strip(),
             "Celery": f"Celery {celery.__version__}"}
    print(f"Start-time error of countdown tasks: start - (send time + countdown), in ms. "
          f"N={args.n} per system, sent at {args.rate:g}/s, countdown={args.countdown:g} s, "
          f"worker -c {args.concurrency}, {'FASTQ_BROKER_URL' if external else 'private'} Redis, "
          f"Python {platform.python_version()} on {platform.machine()} "
          f"({os.cpu_count()} CPUs).\n")
    print("| system | tasks | min | p50 | p90 | p99 | max |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for system, errors in results.items():
        print(row(names[system], errors))
    for problem in problems:
        print(f"\nProblem seen: {problem}")
    if problems:
        log(f"worker logs kept in {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
