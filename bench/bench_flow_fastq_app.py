"""The fastq side of bench/workflows.py: the same tasks, by the same names, as
bench_flow_celery_app.py. Broker and result store: ``BENCH_REDIS_URL``."""
from __future__ import annotations

import os
import time

from fastq import App

QUEUE = "bench"

app = App("bench-flow", broker=os.environ.get("BENCH_REDIS_URL") or None, default_queue=QUEUE)


@app.task(name="flow.stamp")
def stamp(*_args):
    """A no-op header task: returns when it ended (epoch s)."""
    return time.time()


@app.task(name="flow.lag")
def lag(stamps):
    """A chord body: seconds from the last header task's end to this task's start."""
    return time.time() - max(stamps)


@app.task(name="flow.step")
def step(x=0):
    """One link of a chain."""
    return x + 1


@app.task(name="flow.noop", ignore_result=True)
def noop(*_args):
    """A group member (the group bench only sends)."""
