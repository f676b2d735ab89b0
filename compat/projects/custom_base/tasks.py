import json
import os

import redis
from celery import Celery, Task

app = Celery('tasks',
             broker=os.environ['COMPAT_BROKER_URL'],
             backend=os.environ['COMPAT_BROKER_URL'])

store = redis.Redis.from_url(os.environ['COMPAT_BROKER_URL'])


def record(key, **fields):
    store.rpush(f'handlers:{key}', json.dumps(fields, default=repr))


class MyTask(Task):
    greeting = 'hello'

    def on_success(self, retval, task_id, args, kwargs):
        record(task_id, handler='on_success', task=self.name, retval=retval, args=list(args),
               kwargs=kwargs)

    def on_failure(self, exc, task_id, args, kwargs, einfo):
        record(task_id, handler='on_failure', task=self.name, exc=type(exc).__name__,
               args=list(args), einfo=einfo is not None)

    def on_retry(self, exc, task_id, args, kwargs, einfo):
        record(task_id, handler='on_retry', task=self.name, exc=type(exc).__name__)

    def after_return(self, status, retval, task_id, args, kwargs, einfo):
        record(task_id, handler='after_return', task=self.name, status=status,
               retval=type(retval).__name__ if isinstance(retval, BaseException) else retval)


class CountingTask(Task):
    """Overrides __call__ to wrap every run (the docs' way to add behaviour around tasks)."""

    def __call__(self, *args, **kwargs):
        store.incr(f'calls:{self.name}')
        return super().__call__(*args, **kwargs)


@app.task(base=MyTask)
def add(x, y):
    return x + y


@app.task(base=MyTask)
def divide(x, y):
    return x / y


@app.task(base=MyTask, bind=True)
def greet(self, name):
    return f'{self.greeting} {name}'


@app.task(base=MyTask, bind=True, max_retries=1)
def retry_once(self):
    if self.request.retries == 0:
        raise self.retry(exc=RuntimeError('first attempt'), countdown=0.1)
    return 'second attempt'


@app.task(base=CountingTask)
def counted(x):
    return x * 2
