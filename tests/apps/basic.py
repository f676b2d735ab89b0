"""The app the integration tests run real workers on (broker from FASTQ_BROKER_URL)."""
from __future__ import annotations

import asyncio
import os
import time

from fastq import App
from tests.apps import effects

app = App("tests")


class CustomError(Exception):
    pass


@app.task
def echo(value):
    return value


@app.task(serializer="json")
def echo_json(value):
    return value


@app.task
def add(x, y):
    return x + y


@app.task
def fail(kind, message="boom"):
    exc = {"ValueError": ValueError, "KeyError": KeyError, "ZeroDivisionError": ZeroDivisionError,
           "CustomError": CustomError, "RuntimeError": RuntimeError}[kind]
    raise exc(message)


@app.task
async def async_add(x, y):
    await asyncio.sleep(0.01)
    return x + y


@app.task(ignore_result=True)
def noop():
    pass


@app.task
def record(n):
    """Side effect: count each run of n (a hash field per n)."""
    effects().hincrby("effects", str(n), 1)
    return n


@app.task
def slow_record(n, seconds):
    time.sleep(seconds)
    effects().hincrby("effects", str(n), 1)
    return n


@app.task
def log_order(tag):
    effects().rpush("order", tag)


@app.task
def pid():
    return os.getpid()


@app.task(bind=True)
def whoami(self):
    return [self.name, self.request.id]


@app.task
def not_json_serializable():
    return {1, 2, 3}


@app.task(bind=True)
def retry_once(self):
    """Retried once (at once), then succeeds."""
    if self.request.attempt == 0:
        raise self.retry(countdown=0)
    return self.request.attempt


@app.task
def chatty(n):
    """Logs through the standard library and through structlog."""
    import logging

    import structlog

    logging.getLogger("tests.chatty").warning("stdlib line %s", n)
    structlog.get_logger("tests.chatty").warning("structlog line", n=n)
    return n
