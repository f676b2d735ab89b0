"""The fastq side of bench/throughput.py: the same three tasks as bench_celery_app.py.

The broker (and result store) is ``BENCH_REDIS_URL``; the bench sets it to its private Redis.
Task names are spelled out so both systems run tasks with identical names and bodies.
"""
from __future__ import annotations

import os

from fastq import App

QUEUE = "bench"

app = App("bench", broker=os.environ.get("BENCH_REDIS_URL") or None, default_queue=QUEUE)


@app.task(name="bench.noop", ignore_result=True)
def noop(*args):
    """Does nothing; no result is stored."""


@app.task(name="bench.noop_stored")
def noop_stored(*args):
    """Does nothing; its (None) result is stored."""


@app.task(name="bench.echo")
def echo(value):
    return value
