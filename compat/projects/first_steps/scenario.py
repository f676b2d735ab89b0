"""First steps: call a task, wait for its result, inspect the AsyncResult."""
from compatkit import FIRST_TIMEOUT, TIMEOUT, kit

from tasks import add, app, hello


@kit.check
def delay_get():
    return add.delay(4, 4).get(timeout=FIRST_TIMEOUT)


@kit.check
def ready_after_get():
    result = add.delay(1, 2)
    value = result.get(timeout=TIMEOUT)
    return {'value': value, 'ready': result.ready(), 'state': result.state}


@kit.check
def apply_async_args():
    return add.apply_async((2, 3)).get(timeout=TIMEOUT)


@kit.check
def kwargs_call():
    return [hello.delay().get(timeout=TIMEOUT), hello.delay(name='celery').get(timeout=TIMEOUT)]


@kit.check
def local_call():
    # Calling the task object runs it in this process, like a function.
    return add(10, 20)


@kit.check
def task_names():
    return sorted(name for name in app.tasks if name.startswith('tasks.'))


@kit.check
def main_name():
    return app.main


kit.emit()
