import os
import time

import redis
from celery import Celery
from celery.exceptions import MaxRetriesExceededError

app = Celery('tasks',
             broker=os.environ['COMPAT_BROKER_URL'],
             backend=os.environ['COMPAT_BROKER_URL'])

store = redis.Redis.from_url(os.environ['COMPAT_BROKER_URL'], decode_responses=True)


def attempt(key):
    """Note the wall-clock time of this attempt (the scenario measures the backoff)."""
    store.rpush(f'attempts:{key}', time.time())


@app.task(bind=True, autoretry_for=(ConnectionError,), retry_backoff=True,
          retry_jitter=False, max_retries=5)
def flaky(self, key, failures):
    # Fails `failures` times, then succeeds; retried after 1 s, 2 s, 4 s, ...
    attempt(key)
    if self.request.retries < failures:
        raise ConnectionError('service unavailable')
    return {'attempts': self.request.retries + 1}


@app.task(autoretry_for=(ConnectionError,), retry_kwargs={'max_retries': 2, 'countdown': 0.2})
def always_down(key):
    attempt(key)
    raise ConnectionError('still down')


@app.task(bind=True, max_retries=2, default_retry_delay=0.2)
def fetch(self, key):
    attempt(key)
    try:
        raise OSError('connection reset')
    except OSError as exc:
        raise self.retry(exc=exc)


@app.task(bind=True, max_retries=1)
def give_up_gracefully(self, key):
    attempt(key)
    try:
        raise self.retry(countdown=0.2)
    except MaxRetriesExceededError:
        return f'gave up after {self.request.retries} retries'


@app.task(bind=True, max_retries=1)
def give_up_loudly(self, key):
    attempt(key)
    raise self.retry(countdown=0.2)


@app.task(bind=True)
def retry_with_override(self, key):
    # max_retries given to retry() itself overrides the task's default (3).
    attempt(key)
    if self.request.retries < 2:
        raise self.retry(countdown=0.1, max_retries=4)
    return self.request.retries
