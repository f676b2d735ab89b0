"""Tasks for tests/test_reliability_faults.py: killed workers, leases, rate limits, Redis restarts,
hostage tasks and the watchdog.

Tasks record what happened to them (runs, start times) in Redis so the tests can inspect real worker
processes. Broker from FASTQ_BROKER_URL.
"""
from __future__ import annotations

import time

from fastq import App
from tests.apps import effects

app = App("faults")


def release_key(tag: str) -> str:
    return f"release:{tag}"


@app.task
def work(n, seconds=0.0):
    """Side effect: count each run of ``n`` (a field of the hash ``effects``)."""
    if seconds:
        time.sleep(seconds)
    effects().hincrby("effects", str(n), 1)
    return n


@app.task
def pure(n, seconds=0.0):
    """No Redis inside the task: it succeeds whether or not Redis is up while it runs."""
    if seconds:
        time.sleep(seconds)
    return n


@app.task
def hold(tag, seconds):
    """Run for ``seconds``, or until the test sets ``release:{tag}``; record each start."""
    client = effects()
    client.rpush(f"starts:{tag}", f"{time.time():.6f}")
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not client.exists(release_key(tag)):
        time.sleep(0.05)
    client.hincrby("ran", tag, 1)
    return tag


@app.task
def stamp(tag):
    """Record that (and when) ``tag`` ran."""
    client = effects()
    client.rpush(f"starts:{tag}", f"{time.time():.6f}")
    client.hincrby("ran", tag, 1)
    return tag


@app.task(rate_limit="50/s")
def limited(n):
    """Globally limited to 50 per second: record each start time."""
    effects().rpush("limited:starts", f"{time.time():.6f}")
    return n


@app.task
def quick(tag):
    return tag
