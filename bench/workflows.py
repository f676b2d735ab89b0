#!/usr/bin/env python
"""Workflows, fastq against Celery 5 on the same private Redis, in alternating rounds:

  - chord of N no-op header tasks (default 1,000): seconds from submission to the body's result,
    and the delay from the end of the last header task to the start of the body (the header tasks
    return when they ended, the body returns how long after the latest of them it started);
  - chain of M tasks (default 100): seconds from submission to the last task's result;
  - group of G no-op signatures (default 10,000): nodes/s of ``apply_async()`` of the group, with
    no worker running (the submission alone), and of building the signatures too.

Each round starts a fresh ``-c 2`` worker per system (prefork for Celery, whose chords use its
Redis result backend), runs one small warm-up chord and chain, then ``--reps`` measured ones.

    PYTHONPATH=. python bench/workflows.py [--rounds 5] [--reps 3] [--chord 1000] [--chain 100]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import redis

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (  # noqa: E402
    BenchError,
    Run,
    log,
    now,
    percentile,
    reset,
    scan_worker_logs,
    server_version,
    start_server,
)
from systems import CelerySystem, FastqSystem  # noqa: E402

GET_TIMEOUT_S = 300


class Canvas:
    """One system's canvas primitives and the bench tasks (bench_flow_*_app.py)."""

    def __init__(self, system):
        self.system = system
        self.name = system.name
        mod = system.module
        self.stamp, self.lag, self.step, self.noop = mod.stamp, mod.lag, mod.step, mod.noop
        if isinstance(system, CelerySystem):
            from celery import chain, chord, group
        else:
            from fastq import chain, chord, group
        self.chain, self.chord, self.group = chain, chord, group

    def run_chord(self, n: int) -> tuple[float, float]:
        """(seconds from submission to the body's result, body start - last header end)."""
        header = [self.stamp.s(i) for i in range(n)]
        start = now()
        delay = self.chord(header)(self.lag.s()).get(timeout=GET_TIMEOUT_S)
        return now() - start, delay

    def run_chain(self, m: int) -> float:
        start = now()
        result = self.chain(self.step.s(0), *[self.step.s() for _ in range(m - 1)]).apply_async()
        value = result.get(timeout=GET_TIMEOUT_S)
        seconds = now() - start
        if value != m:
            raise BenchError(f"{self.name}: chain of {m} gave {value!r}")
        return seconds

    def submit_group(self, g: int) -> tuple[float, float]:
        """Nodes/s of ``apply_async()`` of a group of ``g`` signatures, and of building the
        signatures and the group as well (``group(t.s(i) for i in ...).apply_async()``)."""
        start = now()
        built = self.group([self.noop.s(i) for i in range(g)])
        ready = now()
        built.apply_async()
        end = now()
        return g / (end - ready), g / (end - start)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--reps", type=int, default=3, help="measured chords and chains per round")
    p.add_argument("--chord", type=int, default=1000, help="header tasks per chord")
    p.add_argument("--chain", type=int, default=100, help="tasks per chain")
    p.add_argument("--group", type=int, default=10_000, help="signatures per group")
    p.add_argument("--only", choices=["fastq", "celery"])
    args = p.parse_args(argv)
    server = start_server()
    os.environ["BENCH_REDIS_URL"] = os.environ["FASTQ_BROKER_URL"] = server.url
    r = redis.Redis.from_url(server.url)
    systems = []
    if args.only != "celery":
        systems.append(FastqSystem(app_module="bench_flow_fastq_app"))
    if args.only != "fastq":
        systems.append(CelerySystem(app_module="bench_flow_celery_app"))
    canvases = [Canvas(s) for s in systems]
    logdir = Path(tempfile.mkdtemp(prefix="fastq-bench-flows-"))
    run = Run(r, logdir, problems=[])
    got: dict[str, dict[str, list[float]]] = {
        c.name: {"chord": [], "delay": [], "chain": [], "group": [], "group_built": []}
        for c in canvases}
    try:
        for rnd in range(args.rounds):
            order = canvases if rnd % 2 == 0 else canvases[::-1]
            for canvas in order:
                reset(r)
                sent, built = canvas.submit_group(args.group)
                got[canvas.name]["group"].append(sent)
                got[canvas.name]["group_built"].append(built)
                reset(r)
                worker, hostname = run.worker(canvas.system, 2, f"flows-r{rnd}")
                with worker:
                    run.wait_ready(canvas.system, worker, 2, hostname)
                    canvas.run_chord(50)  # warm-up
                    canvas.run_chain(10)
                    for _ in range(args.reps):
                        seconds, delay = canvas.run_chord(args.chord)
                        got[canvas.name]["chord"].append(seconds)
                        got[canvas.name]["delay"].append(delay)
                        got[canvas.name]["chain"].append(canvas.run_chain(args.chain))
                mine = got[canvas.name]
                log(f"round {rnd + 1}: {canvas.name}: chord {mine['chord'][-1] * 1000:,.0f} ms "
                    f"(body delay {mine['delay'][-1] * 1000:.2f} ms), chain "
                    f"{mine['chain'][-1] * 1000:,.0f} ms, group {mine['group'][-1]:,.0f} nodes/s")
        scan_worker_logs(logdir, run.problems)
        version = server_version(r)
    finally:
        server.stop()
    report(args, got, version)
    if run.problems:
        print("\nproblems:\n" + "\n".join(f"- {p}" for p in run.problems))
    return 0


def report(args, got: dict[str, dict[str, list[float]]], version: str) -> None:
    def med(name: str, what: str) -> float:
        return statistics.median(got[name][what])

    def p(name: str, what: str, q: float) -> float:
        return percentile(sorted(got[name][what]), q)

    names = list(got)
    print(f"workflows, -c 2 workers, {version}, {args.rounds} rounds x {args.reps} reps "
          f"(group: one submission per round), {time.strftime('%Y-%m-%d')}\n")
    print("| measurement | " + " | ".join(names) + (" | fastq / Celery |" if len(names) == 2
                                                     else " |"))
    print("|---|" + "---:|" * (len(names) + (1 if len(names) == 2 else 0)))
    rows = [
        (f"chord of {args.chord:,}: submit to body result, median ms", "chord", 1000, True),
        (f"chain of {args.chain}: submit to last result, median ms", "chain", 1000, True),
        (f"group of {args.group:,}: apply_async, median nodes/s", "group", 1, False),
        (f"group of {args.group:,}: signatures built and sent, median nodes/s", "group_built", 1,
         False),
    ]
    for label, what, scale, lower_is_better in rows:
        cells = [f"{med(n, what) * scale:,.1f}" for n in names]
        if len(names) == 2:
            a, b = med(names[0], what), med(names[1], what)
            cells.append(f"{(b / a if lower_is_better else a / b):.1f}x")
        print(f"| {label} | " + " | ".join(cells) + " |")
    for q in (50, 90, 99):
        cells = [f"{p(n, 'delay', q) * 1000:.2f}" for n in names]
        if len(names) == 2:
            cells.append(f"{p(names[1], 'delay', q) / max(p(names[0], 'delay', q), 1e-9):.1f}x")
        print(f"| chord body start after the last header task, p{q} ms | " + " | ".join(cells)
              + " |")
    print("\nruns (ms; group in nodes/s):")
    for n in names:
        for what in ("chord", "delay", "chain", "group", "group_built"):
            scale = 1 if what.startswith("group") else 1000
            print(f"- {n} {what}: " + ", ".join(f"{v * scale:,.1f}" for v in got[n][what]))


if __name__ == "__main__":
    sys.exit(main())
