"""The Celery side of bench/workflows.py: the tasks of bench_flow_tasks.py, by the same names as
bench_flow_fastq_app.py. Broker and result backend (Celery's chords need one): ``BENCH_REDIS_URL``.
Celery's defaults otherwise; readiness via ``worker_ready``, as in bench_celery_app.py."""
from __future__ import annotations

import os

import redis
from bench_flow_tasks import register
from celery import Celery
from celery.signals import worker_ready

QUEUE = "bench"
READY_KEY = "bench:celery:ready"
URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")

app = Celery("bench-flow", broker=URL, backend=URL)
app.conf.update(task_default_queue=QUEUE, broker_connection_retry_on_startup=True)
stamp, lag, step, noop = register(app.task)


@worker_ready.connect
def _mark_ready(**_kwargs):
    redis.Redis.from_url(URL).set(READY_KEY, os.getpid())
