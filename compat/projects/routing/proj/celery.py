import os

from celery import Celery

app = Celery('proj',
             broker=os.environ['COMPAT_BROKER_URL'],
             backend=os.environ['COMPAT_BROKER_URL'],
             include=['proj.tasks', 'proj.other'])


def route_task(name, args, kwargs, options, task=None, **kw):
    """A router function: urgent tasks go to queue "a" whatever their module."""
    if name.endswith('.urgent'):
        return {'queue': 'a'}
    return None


app.conf.task_routes = (
    route_task,
    {
        'proj.tasks.to_a': {'queue': 'a'},
        'proj.tasks.*': {'queue': 'b'},
    },
)
