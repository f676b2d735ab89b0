"""A client that knows only task names: send_task and signatures by name."""
import os

from celery import Celery

from compatkit import FIRST_TIMEOUT, TIMEOUT, kit

# A separate client app: it does not import the project's tasks module.
client = Celery('client',
                broker=os.environ['COMPAT_BROKER_URL'],
                backend=os.environ['COMPAT_BROKER_URL'])


@kit.check
def send_task():
    return client.send_task('tasks.add', args=(2, 2)).get(timeout=FIRST_TIMEOUT)


@kit.check
def send_task_kwargs_and_custom_name():
    return client.send_task('reports.render', kwargs={'title': 'Q3', 'pages': 4}).get(timeout=TIMEOUT)


@kit.check
def signature_by_name():
    return client.signature('tasks.add', args=(5, 5)).delay().get(timeout=TIMEOUT)


@kit.check
def unregistered_name():
    # The worker does not know the name: the task fails with NotRegistered.
    result = client.send_task('tasks.no_such_task', args=(1,))
    error = result.get(timeout=TIMEOUT, propagate=False)
    return {'state': result.state, 'result': type(error).__name__}


@kit.check
def config_module_loaded():
    from tasks import app
    return {'timezone': app.conf.timezone, 'enable_utc': app.conf.enable_utc,
            'task_serializer': app.conf.task_serializer,
            'broker_is_env': app.conf.broker_url == os.environ['COMPAT_BROKER_URL'],
            'annotation_applied': app.tasks['tasks.add'].rate_limit}


kit.emit()
