import json
import os

import redis
from celery import Celery
from celery.signals import (after_task_publish, before_task_publish, task_failure, task_postrun,
                            task_prerun, task_success, worker_process_init, worker_ready)

app = Celery('tasks',
             broker=os.environ['COMPAT_BROKER_URL'],
             backend=os.environ['COMPAT_BROKER_URL'])

store = redis.Redis.from_url(os.environ['COMPAT_BROKER_URL'])


def record(signal, **fields):
    store.rpush('signals', json.dumps(dict(fields, signal=signal), default=repr))


@app.task
def add(x, y):
    return x + y


@app.task
def fail(message):
    raise KeyError(message)


@task_prerun.connect
def on_prerun(sender=None, task_id=None, task=None, args=None, kwargs=None, **extra):
    record('task_prerun', sender=sender.name, task_id=task_id, task=task.name,
           args=list(args), kwargs=dict(kwargs))


@task_postrun.connect
def on_postrun(sender=None, task_id=None, task=None, args=None, kwargs=None, retval=None,
               state=None, **extra):
    record('task_postrun', sender=sender.name, task_id=task_id, task=task.name,
           args=list(args), kwargs=dict(kwargs), state=state,
           retval=type(retval).__name__ if isinstance(retval, BaseException) else retval)


@task_success.connect
def on_success(sender=None, result=None, **extra):
    record('task_success', sender=sender.name, task_id=sender.request.id, result=result)


@task_failure.connect
def on_failure(sender=None, task_id=None, exception=None, args=None, kwargs=None,
               traceback=None, einfo=None, **extra):
    record('task_failure', sender=sender.name, task_id=task_id,
           exception=type(exception).__name__, exception_args=list(exception.args),
           args=list(args), kwargs=dict(kwargs), traceback=traceback is not None,
           einfo=einfo is not None)


@before_task_publish.connect
def on_before_publish(sender=None, headers=None, body=None, **extra):
    record('before_task_publish', sender=sender, task_id=(headers or {}).get('id'),
           headers_task=(headers or {}).get('task'))


@after_task_publish.connect
def on_after_publish(sender=None, headers=None, body=None, routing_key=None, **extra):
    record('after_task_publish', sender=sender, task_id=(headers or {}).get('id'),
           routing_key=routing_key)


@worker_ready.connect
def on_worker_ready(sender=None, **extra):
    store.incr('worker_ready')


@worker_process_init.connect
def on_worker_process_init(sender=None, **extra):
    store.incr('worker_process_init')
