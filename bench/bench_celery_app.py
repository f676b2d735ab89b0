"""The Celery side of bench/throughput.py: the same three tasks as bench_fastq_app.py.

Broker and result backend are both ``BENCH_REDIS_URL`` (the bench's private Redis). Everything else
is Celery's default, except the queue name and ``broker_connection_retry_on_startup`` (set only to
silence Celery 5's deprecation warning; it has no effect once connected).

Readiness: the ``worker_ready`` signal (sent by the worker's main process once the pool is up and
the consumer is consuming) sets ``READY_KEY``, which the bench polls.
"""
from __future__ import annotations

import os

import redis
from celery import Celery
from celery.signals import worker_ready

QUEUE = "bench"
READY_KEY = "bench:celery:ready"
URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")

app = Celery("bench", broker=URL, backend=URL)
app.conf.update(task_default_queue=QUEUE, broker_connection_retry_on_startup=True)


@app.task(name="bench.noop", ignore_result=True)
def noop(*args):
    """Does nothing; no result is stored."""


@app.task(name="bench.noop_stored")
def noop_stored(*args):
    """Does nothing; its (None) result is stored."""


@app.task(name="bench.echo")
def echo(value):
    return value


@worker_ready.connect
def _mark_ready(**_kwargs):
    redis.Redis.from_url(URL).set(READY_KEY, os.getpid())
