import os
import time

import redis
from celery import Celery

app = Celery('tasks',
             broker=os.environ['COMPAT_BROKER_URL'],
             backend=os.environ['COMPAT_BROKER_URL'])


class OutOfStock(Exception):
    """A project's own exception class."""


@app.task
def add(x, y):
    return x + y


@app.task
def fail(message):
    raise ValueError(message)


@app.task
def sell(item):
    raise OutOfStock(item)


@app.task
def slow(seconds):
    time.sleep(seconds)
    return 'slept'


@app.task
def echo(value):
    return value


@app.task(ignore_result=True)
def fire_and_forget(key):
    redis.Redis.from_url(os.environ['COMPAT_BROKER_URL']).set(key, 'done')
    return 'not stored'
