import os
import time

from celery import Celery
from celery.exceptions import SoftTimeLimitExceeded

app = Celery('tasks',
             broker=os.environ['COMPAT_BROKER_URL'],
             backend=os.environ['COMPAT_BROKER_URL'])


@app.task
def add(x, y):
    return x + y


@app.task(soft_time_limit=1)
def cleanup_on_soft_limit(seconds):
    try:
        time.sleep(seconds)
        return 'finished'
    except SoftTimeLimitExceeded:
        return 'soft limit: cleaned up'


@app.task(soft_time_limit=1)
def ignores_soft_limit(seconds):
    time.sleep(seconds)
    return 'finished'


@app.task(time_limit=1)
def hard_limited(seconds):
    time.sleep(seconds)
    return 'finished'


@app.task
def sleeper(seconds):
    try:
        time.sleep(seconds)
        return 'finished'
    except SoftTimeLimitExceeded:
        return 'soft limit from apply_async'
