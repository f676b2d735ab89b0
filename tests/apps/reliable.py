"""Tasks for tests/test_reliability_tasks.py: retries, time limits, revoke, scheduling, priorities.

Tasks record what happened to them (start times, attempts, run order) in Redis, so the tests can
check timing and side effects of real worker processes. Broker from FASTQ_BROKER_URL.
"""
from __future__ import annotations

import asyncio
import time

from fastq import App
from fastq.errors import SoftTimeLimitExceeded, TimeLimitExceeded
from tests.apps import effects

app = App("reliable")


def starts_key(task_id: str) -> str:
    return f"starts:{task_id}"


def stamp(task) -> int:
    """Record this attempt's start (``attempt:epoch seconds``) under the task id; return attempt."""
    msg = task.request
    effects().rpush(starts_key(msg.id), f"{msg.attempt}:{time.time():.6f}")
    return msg.attempt


# -- retry policies ----------------------------------------------------------------------------
@app.task(bind=True, retry_for=(ConnectionError,), max_retries=3, retry_schedule=[0.2, 0.5, 0.3])
def flaky_schedule(self):
    raise ConnectionError(f"attempt {stamp(self)} failed")


@app.task(bind=True, retry_for=(ConnectionError,), max_retries=2, default_retry_delay=0.25)
def flaky_fixed(self):
    raise ConnectionError(f"attempt {stamp(self)} failed")


@app.task(bind=True, autoretry_for=(ConnectionError,), max_retries=3, retry_backoff=0.1,
          retry_backoff_max=0.3, retry_jitter=False)
def flaky_backoff(self):
    raise ConnectionError(f"attempt {stamp(self)} failed")


@app.task(bind=True)
def succeeds_on_third(self):
    attempt = stamp(self)
    if attempt < 2:
        raise self.retry(exc=ConnectionError(f"attempt {attempt}"), countdown=0.1)
    return f"done on attempt {attempt}"


@app.task(bind=True, max_retries=2)
def retries_forever(self):
    attempt = stamp(self)
    raise self.retry(exc=LookupError(f"still missing at attempt {attempt}"), countdown=0.05)


@app.task(bind=True, retry_for=(ConnectionError,), max_retries=1, retry_schedule=[0.05])
def gated(self):
    """Fails until the test sets the Redis key ``gate``."""
    stamp(self)
    if not effects().exists("gate"):
        raise ConnectionError("gate closed")
    return "through the gate"


# -- time limits -------------------------------------------------------------------------------
@app.task(soft_time_limit=0.3)
def soft_caught():
    try:
        time.sleep(5)
    except SoftTimeLimitExceeded:
        return "cleaned up"
    return "not interrupted"


@app.task(soft_time_limit=0.3)
def soft_uncaught():
    time.sleep(5)
    return "not interrupted"


@app.task(soft_time_limit=0.3)
async def soft_async():
    await asyncio.sleep(5)
    return "not interrupted"


@app.task(bind=True, time_limit=1)
def hard_sleeper(self):
    stamp(self)
    time.sleep(30)
    return "not killed"


@app.task(bind=True, time_limit=0.5, retry_for=(TimeLimitExceeded,), max_retries=2,
          retry_schedule=[0.1])
def hard_then_quick(self):
    """Hangs on the first attempt (killed at the hard limit, then retried), quick after."""
    attempt = stamp(self)
    if attempt == 0:
        time.sleep(30)
    return f"ok on attempt {attempt}"


# -- side effects ------------------------------------------------------------------------------
@app.task(bind=True)
def mark(self, tag):
    """Record that (and when) ``tag`` ran."""
    stamp(self)
    effects().hincrby("ran", tag, 1)
    return tag


@app.task(bind=True)
def sleeper(self, tag, seconds):
    stamp(self)
    time.sleep(seconds)
    effects().hincrby("ran", tag, 1)
    return tag


@app.task
def log_order(tag):
    effects().rpush("order", tag)


@app.task
def add(x, y):
    return x + y


@app.task
def echo(value):
    return value
