"""The Celery side of bench/delay_precision.py: the same task as bench_delay_app.py.

Broker: ``BENCH_REDIS_URL``; no result backend (the task records its start time itself, in the hash
``bench:delay:celery``). Celery's defaults otherwise (prefork pool; a countdown message is delivered
at once and held by the worker until its ETA). ``worker_ready`` sets ``READY_KEY`` for the bench.
"""
from __future__ import annotations

import os
import time

import redis
from celery import Celery
from celery.signals import worker_ready

QUEUE = "delaybench"
RESULTS_KEY = "bench:delay:celery"
READY_KEY = "bench:delay:celery:ready"
URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")

app = Celery("delaybench", broker=URL)
app.conf.update(task_default_queue=QUEUE, broker_connection_retry_on_startup=True)
_client: redis.Redis | None = None


@app.task(name="bench.delay.record", ignore_result=True)
def record(i: int, due: float) -> None:
    started = time.time()
    global _client
    if _client is None:
        _client = redis.Redis.from_url(URL)
    _client.hset(RESULTS_KEY, str(i), f"{started!r},{due!r}")


@worker_ready.connect
def _mark_ready(**_kwargs):
    redis.Redis.from_url(URL).set(READY_KEY, os.getpid())
