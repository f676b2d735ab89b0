"""``fastq demo``: a worker plus a real mixed workload on the embedded default, then a report."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time

import click
import msgpack

from fastq._core import IMPLEMENTATION, unpack_value
from fastq.broker.embedded import resolve_broker_url

CHUNK = 5000


def _plan(i: int, fail_every: int):
    """Which task the i-th message is: the same mix every run."""
    from fastq import demo_tasks as t

    if fail_every and i % fail_every == 0:
        return t.flaky, (i,)
    slot = i % 20
    if slot < 14:
        return t.add, (i, i)
    if slot < 17:
        return t.checksum, (i.to_bytes(8, "big") * 128,)
    return t.lookup, (i,)


def _start_worker(url: str, concurrency: int) -> tuple[subprocess.Popen, str]:
    """The worker runs as its own process, exactly as ``fastq worker`` would; its log goes to a file
    (the purposeful failures would otherwise flood the terminal)."""
    name = f"demo-{os.getpid()}"
    log_path = os.path.join(tempfile.gettempdir(), f"fastq-demo-worker-{os.getpid()}.log")
    cmd = [sys.executable, "-m", "fastq", "-A", "fastq.demo_tasks", "worker", "-c", str(concurrency),
           "-Q", "fastq-demo", "-n", name, "-l", "info"]
    with open(log_path, "w") as log_file:
        proc = subprocess.Popen(cmd, env={**os.environ, "FASTQ_BROKER_URL": url},
                                stdout=log_file, stderr=subprocess.STDOUT)
    click.echo(f"worker log: {log_path}")
    return proc, name


def _ready_children(broker, name: str) -> int:
    """How many of worker ``name``'s children have written a heartbeat."""
    prefix = f"{name}:"
    return sum(1 for info in broker.workers()
               if str(msgpack.unpackb(info, raw=False).get("consumer", "")).startswith(prefix))


def _wait_ready(broker, name: str, concurrency: int, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 30
    while _ready_children(broker, name) < concurrency:
        if proc.poll() is not None or time.monotonic() > deadline:
            raise click.ClickException("the demo worker did not start")
        time.sleep(0.05)


def _remaining(broker) -> int:
    return sum(st.depth for st in broker.stats("fastq-demo"))


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def run_demo(count: int, concurrency: int, fail_ratio: float) -> int:
    from fastq import demo_tasks

    url = resolve_broker_url(None)
    app = demo_tasks.app
    app.conf.broker_url = url
    broker = app.broker
    broker.purge("fastq-demo")
    click.echo(f"fastq demo: {count:,} tasks, worker -c {concurrency}, broker {url}, core {IMPLEMENTATION}")
    proc, name = _start_worker(url, concurrency)
    try:
        _wait_ready(broker, name, concurrency, proc)
        fail_every = int(round(1 / fail_ratio)) if fail_ratio > 0 else 0
        sent: list[tuple[str, int]] = []  # (task id, send time ms)
        started = time.perf_counter()
        with click.progressbar(length=count, label="sending  ") as bar:
            for base in range(0, count, CHUNK):
                now_ms = int(time.time() * 1000)
                with app.batch():
                    for i in range(base, min(base + CHUNK, count)):
                        task, args = _plan(i, fail_every)
                        sent.append((task.apply_async(args).id, now_ms))
                bar.update(min(CHUNK, count - base))
        sent_s = time.perf_counter() - started
        with click.progressbar(length=count, label="finishing") as bar:
            shown = 0
            while True:
                done = count - _remaining(broker)
                bar.update(done - shown)
                shown = done
                if done >= count:
                    break
                if proc.poll() is not None:
                    raise click.ClickException("the demo worker exited unexpectedly")
                time.sleep(0.1)
        wall_s = time.perf_counter() - started
        _report(broker, sent, count, sent_s, wall_s, fail_every)
        return 0
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


def _report(broker, sent, count, sent_s, wall_s, fail_every) -> None:
    states: dict[str, int] = {}
    latencies: list[float] = []
    missing = 0
    records = broker.peek_results([task_id for task_id, _ in sent])
    for (_, sent_ms), raw in zip(sent, records, strict=True):
        if raw is None:
            missing += 1
            continue
        record = unpack_value(raw)
        states[record[0]] = states.get(record[0], 0) + 1
        latencies.append(record[5] - sent_ms)
    latencies.sort()
    expected_failures = len(range(0, count, fail_every)) if fail_every else 0
    click.echo("")
    click.echo(f"  tasks          {count:>12,}")
    click.echo(f"  succeeded      {states.get('SUCCESS', 0):>12,}")
    click.echo(f"  failed         {states.get('FAILURE', 0):>12,}   (expected {expected_failures:,}: "
               "FlakyError on purpose)")
    click.echo(f"  lost           {missing:>12,}")
    click.echo(f"  enqueue rate   {count / sent_s:>12,.0f} tasks/s  (pipelined batches of {CHUNK})")
    click.echo(f"  throughput     {count / wall_s:>12,.0f} tasks/s  (first send to last result)")
    click.echo(f"  latency p50    {_percentile(latencies, 0.50):>12,.0f} ms  (send to result, "
               "includes waiting behind the burst)")
    click.echo(f"  latency p90    {_percentile(latencies, 0.90):>12,.0f} ms")
    click.echo(f"  latency p99    {_percentile(latencies, 0.99):>12,.0f} ms")
    if missing:
        raise click.ClickException(f"{missing} tasks have no result")


__all__ = ["run_demo"]
