import os

from celery import Celery

app = Celery('tasks',
             broker=os.environ['COMPAT_BROKER_URL'],
             backend=os.environ['COMPAT_BROKER_URL'])


@app.task
def add(x, y):
    return x + y


@app.task
def hello(name='world'):
    return f'hello {name}'
