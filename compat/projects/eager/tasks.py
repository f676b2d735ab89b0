import os

from celery import Celery

app = Celery('tasks',
             broker=os.environ['COMPAT_BROKER_URL'],
             backend=os.environ['COMPAT_BROKER_URL'])
app.conf.task_always_eager = True
app.conf.task_eager_propagates = True


@app.task
def add(x, y):
    return x + y


@app.task
def fail():
    raise ValueError('eager failure')


@app.task(bind=True)
def context(self):
    return {'is_eager': self.request.is_eager, 'args': list(self.request.args)}


@app.task(bind=True, max_retries=2)
def retrying(self):
    if self.request.retries < 2:
        raise self.retry(countdown=10)
    return self.request.retries
