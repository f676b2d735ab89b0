#!/usr/bin/env python
"""What the seams cost: drain -c 2 of no-op tasks (results ignored) on the same private Redis, for

  - fastq before the middleware seams (a checkout of ``--before REV``, default eaf6b22),
  - fastq now, with no middleware installed,
  - fastq now, with one no-op middleware (bench_fastq_mw_app.py: every per-task hook overridden),
  - fastq now, recording Prometheus metrics (``--metrics-port``, docs/metrics.md),
  - fastq now, publishing events as well (``-E``, docs/events.md),
  - Celery 5 (the ratio the project is measured by),

in alternating rounds, reporting medians and ratios (also the median of each round's ratio to
plain fastq in the same round, which the machine's drift between rounds moves less):

    PYTHONPATH=. python bench/middleware_cost.py [--rounds 5] [-n 100000] [--before eaf6b22]

The older checkout is made with ``git worktree add`` under the temp dir and built in place.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import redis

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import ROOT, Run, log, start_server  # noqa: E402
from systems import CelerySystem, FastqSystem  # noqa: E402
from throughput import measure_drain  # noqa: E402


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def checkout(rev: str) -> Path:
    """A built worktree of ``rev`` (made once, reused)."""
    where = Path(tempfile.gettempdir()) / f"fastq-at-{rev}"
    if not (where / "fastq").exists():
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(where), rev],
                       check=True, capture_output=True)
    subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "--inplace"], cwd=where,
                   check=True, capture_output=True)
    return where


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("-n", type=int, default=100_000, help="tasks per fastq drain")
    p.add_argument("--celery-n", type=int, default=10_000, help="tasks per Celery drain")
    p.add_argument("--before", default="eaf6b22", help="the commit before the seams")
    p.add_argument("--no-celery", action="store_true")
    args = p.parse_args(argv)
    before = checkout(args.before)
    server = start_server()
    try:  # the apps read BENCH_REDIS_URL when the systems import them
        os.environ["BENCH_REDIS_URL"] = os.environ["FASTQ_BROKER_URL"] = server.url
        systems = [FastqSystem(f"fastq@{args.before}", path=before), FastqSystem("fastq"),
                   FastqSystem("fastq+1 no-op middleware", app_module="bench_fastq_mw_app"),
                   FastqSystem("fastq --metrics-port", worker_args=("--metrics-port",
                                                                    str(free_port()))),
                   FastqSystem("fastq --metrics-port -E", worker_args=(
                       "--metrics-port", str(free_port()), "-E"))]
        if not args.no_celery:
            systems.append(CelerySystem())
        rates: dict[str, list[float]] = {s.name: [] for s in systems}
        run = Run(redis.Redis.from_url(server.url), Path(tempfile.mkdtemp()), problems=[])
        for rnd in range(args.rounds):
            for system in systems:
                n = args.celery_n if isinstance(system, CelerySystem) else args.n
                drain = measure_drain(system, run, concurrency=2, stored=False, n=n)
                rates[system.name].append(drain.rate)
                log(f"round {rnd + 1}: {system.name}: {drain.rate:,.0f} tasks/s")
        if run.problems:
            print("problems:", run.problems)
    finally:
        server.stop()
    med = {name: statistics.median(v) for name, v in rates.items()}
    base = med[systems[0].name]
    print(f"drain -c 2, results ignored, median of {args.rounds} alternating rounds "
          f"(fastq n={args.n:,}, Celery n={args.celery_n:,})\n")
    now = med["fastq"]
    print(f"| system | tasks/s (median) | runs | vs fastq@{args.before} | vs fastq | "
          "vs fastq, paired | vs Celery |")
    print("|---|---:|---|---:|---:|---:|---:|")
    celery = med.get("Celery")
    for name, value in med.items():
        runs = ", ".join(f"{x:,.0f}" for x in rates[name])
        vs_celery = f"{value / celery:.1f}x" if celery else "-"
        # the median of each round's ratio to the plain fastq drain just before or after it:
        # the machine's speed drifts between rounds much more than within one
        paired = statistics.median(a / b for a, b in zip(rates[name], rates["fastq"],
                                                         strict=True))
        print(f"| {name} | {value:,.0f} | {runs} | {value / base:.3f} | {value / now:.3f} "
              f"| {paired:.3f} | {vs_celery} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
