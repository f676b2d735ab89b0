import os
from datetime import timedelta

import redis
from celery import Celery

app = Celery('tasks',
             broker=os.environ['COMPAT_BROKER_URL'],
             backend=os.environ['COMPAT_BROKER_URL'])

app.conf.beat_schedule = {
    'tick-every-second': {
        'task': 'tasks.tick',
        'schedule': timedelta(seconds=1),
        'args': ('timedelta',),
    },
    'tick-with-kwargs': {
        'task': 'tasks.tick',
        'schedule': 1.0,
        'kwargs': {'name': 'seconds'},
    },
}
app.conf.timezone = 'UTC'


@app.on_after_configure.connect
def setup_periodic_tasks(sender, **kwargs):
    sender.add_periodic_task(1.0, tick.s('added'), name='added every second')


@app.task
def tick(name):
    store = redis.Redis.from_url(os.environ['COMPAT_BROKER_URL'])
    store.rpush('ticks', name)
    return name
