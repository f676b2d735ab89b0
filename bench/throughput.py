#!/usr/bin/env python
"""fastq vs Celery 5 on the same (private) Redis: the same workloads, one table.

    PYTHONPATH=. python bench/throughput.py [--quick] [--only fastq|celery] [-n N]
                                            [--markdown-out FILE] [--keep-logs]

Measurements (bench/README.md explains each):
  (a) enqueue rate, one ``.delay()`` at a time, no worker running
  (b) drain rate of tasks already queued, worker -c 2 and -c 8, results ignored and stored
  (c) round-trip latency of ``.delay(x).get()`` on an idle worker (-c 2)
  (d) batch enqueue rate (fastq ``Task.map``; Celery ``group().apply_async()`` and a producer loop)
  (e) worker memory (supervisor + children): peak summed RSS and PSS during the -c 2 drain
and, as the ceiling of (a) and (d), plain redis-py XADDs on the same Redis.

This file holds the measurements and the report; the servers, processes, memory sampling and
timing are in harness.py, the per-system adapters in systems.py. Progress goes to stderr; the
report (markdown) to stdout, and to ``--markdown-out`` if given.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import platform
import shlex
import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import redis
from harness import (
    ROOT,
    BenchError,
    MemorySampler,
    Run,
    count_existing,
    git_state,
    interrupt_on_sigterm,
    log,
    now,
    percentile,
    reset,
    scan_worker_logs,
    server_version,
    start_server,
    timed,
    wait_until,
)
from systems import CelerySystem, FastqSystem, RawRedis

ENQUEUE_WARMUP = 100  # sends before the timed (a) loop: connection set-up, queue declaration


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
        states = system.states([ids[0], ids[-1]])
        if states != {"SUCCESS"}:
            raise BenchError(f"stored results in state {states}, expected SUCCESS")
    seconds = end - start
    return Drain(n / seconds, seconds, memory.peak_rss_kib, memory.peak_pss_kib,
                 memory.max_procs, worker.stop_seconds)


# -- running it all ------------------------------------------------------------------------------
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
    raw = RawRedis(run.r)
    single = measure_enqueue(raw, run.r, sizes.enqueue)
    (batch,) = measure_batch(raw, run.r, sizes.batch["fastq"]).values()
    reset(run.r)
    report.details.append(f"{raw.name} on the same Redis (the ceiling of (a) and (d)): XADD of "
                          f"{len(raw.VALUE)} bytes one at a time {single:,.0f}/s, "
                          f"{sizes.batch['fastq']:,} pipelined {batch:,.0f}/s")
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


def machine_info(r: redis.Redis) -> list[str]:
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
        f"server: {server_version(r)}",
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


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    n = args.n or (2_000 if args.quick else 20_000)
    sizes = Sizes.for_run(n, args.quick)
    args_line = shlex.join(["python", *sys.argv]) if argv is None else shlex.join(argv)
    interrupt_on_sigterm()
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
            server = start_server()
            stack.callback(server.stop)
            log(f"private redis-server on {server.url}")
            os.environ["BENCH_REDIS_URL"] = server.url  # read by the app modules and workers
            os.environ["FASTQ_BROKER_URL"] = server.url
            if args.only in (None, "fastq"):
                systems.append(FastqSystem())
            if args.only in (None, "celery"):
                systems.append(CelerySystem())
            for s in systems:
                stack.callback(s.close)
            client = redis.Redis.from_url(server.url)
            stack.callback(client.close)
            machine = machine_info(client)
            run = Run(client, workdir / "logs", report.problems)
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
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 130 if interrupted else (1 if failed else 0)


if __name__ == "__main__":
    sys.exit(main())
