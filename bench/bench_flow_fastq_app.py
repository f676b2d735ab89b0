"""The fastq side of bench/workflows.py: the tasks of bench_flow_tasks.py, by the same names as
bench_flow_celery_app.py. Broker and result store: ``BENCH_REDIS_URL``."""
from __future__ import annotations

import os

from bench_flow_tasks import register

from fastq import App

QUEUE = "bench"

app = App("bench-flow", broker=os.environ.get("BENCH_REDIS_URL") or None, default_queue=QUEUE)
stamp, lag, step, noop = register(app.task)
