"""The Celery side of bench/workflows.py: the same tasks, by the same names, as
bench_flow_fastq_app.py. Broker and result backend (Celery's chords need one): ``BENCH_REDIS_URL``.
Celery's defaults otherwise; readiness via ``worker_ready``, as in bench_celery_app.py."""
from __future__ import annotations

import os
import time

import redis
from celery import Celery
from celery.signals import worker_ready

QUEUE = "bench"
READY_KEY = "bench:celery:ready"
URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")

app = Celery("bench-flow", broker=URL, backend=URL)
app.conf.update(task_default_queue=QUEUE, broker_connection_retry_on_startup=True)


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


@worker_ready.connect
def _mark_ready(**_kwargs):
    redis.Redis.from_url(URL).set(READY_KEY, os.getpid())
