"""The fastq side of bench/delay_precision.py: one task that records when it started.

Broker and result store: ``BENCH_REDIS_URL`` (the bench's Redis). ``bench.delay.record(i, due)``
writes ``"<start epoch s>,<intended due epoch s>"`` to the hash ``bench:delay:fastq`` under ``i``.
"""
from __future__ import annotations

import os
import time

import redis

from fastq import App

QUEUE = "delaybench"
RESULTS_KEY = "bench:delay:fastq"
URL = os.environ.get("BENCH_REDIS_URL") or None

app = App("delaybench", broker=URL, default_queue=QUEUE)
_client: redis.Redis | None = None


@app.task(name="bench.delay.record", ignore_result=True)
def record(i: int, due: float) -> None:
    started = time.time()  # first thing: the start time is what is measured
    global _client
    if _client is None:  # one connection per worker child (created after the fork)
        _client = redis.Redis.from_url(app.conf.broker_url)
    _client.hset(RESULTS_KEY, str(i), f"{started!r},{due!r}")
