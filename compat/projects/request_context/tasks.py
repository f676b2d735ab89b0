import os

from celery import Celery, current_app, current_task

app = Celery('tasks',
             broker=os.environ['COMPAT_BROKER_URL'],
             backend=os.environ['COMPAT_BROKER_URL'])


@app.task(bind=True)
def inspect_request(self, *args, **kwargs):
    request = self.request
    return {
        'id': request.id,
        'task': getattr(request, 'task', None),
        'args': list(request.args),
        'kwargs': request.kwargs,
        'retries': request.retries,
        'is_eager': request.is_eager,
        'called_directly': request.called_directly,
        'routing_key': (request.delivery_info or {}).get('routing_key'),
        'root_id': getattr(request, 'root_id', None),
        'parent_id': getattr(request, 'parent_id', None),
        'custom_header': request.get('tenant'),
        'current_task_name': current_task.name,
        'current_app_main': current_app.main,
    }


@app.task(bind=True)
def parent(self):
    child = inspect_request.delay('from-parent')
    return {'parent_id': self.request.id, 'child_id': child.id}
