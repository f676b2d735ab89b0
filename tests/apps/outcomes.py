"""Tasks for tests/test_outcomes_written.py: outcomes under OOM, late writers, poison, uniqueness.

Broker from FASTQ_BROKER_URL (a test may point a worker at a private server of its own).
"""
from __future__ import annotations

import os
import signal
import time

from fastq import App
from tests.apps import effects

app = App("outcomes")


@app.task
def square(n):
    return n * n


@app.task(bind=True, retry_for=(ConnectionError,), max_retries=1, retry_schedule=[0.1])
def flaky(self, n):
    """Fails its first attempt (a retry, written to the delayed set), succeeds on the second."""
    if self.request.attempt == 0:
        raise ConnectionError(f"first attempt of {n}")
    return n


@app.task
def gated(n):
    """Wait while the key ``gate`` exists (reading only: nothing is written under OOM)."""
    while effects().exists("gate"):
        time.sleep(0.02)
    return n


@app.task
def held(tag, seconds):
    """Record the start, run ``seconds`` (or until ``release:{tag}`` is set); return this pid."""
    effects().rpush(f"starts:{tag}", os.getpid())
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not effects().exists(f"release:{tag}"):
        time.sleep(0.02)
    return os.getpid()


@app.task
def kills_its_worker():
    os.kill(os.getpid(), signal.SIGKILL)


@app.task(unique_key="only-one")
def unique_echo(value):
    return value
