"""Results: everything an AsyncResult tells about a task that succeeded or failed."""
from celery.exceptions import TimeoutError
from celery.result import AsyncResult

from compatkit import FIRST_TIMEOUT, TIMEOUT, exc_name, kit, redis_client, wait_until

import tasks
from tasks import add, app, echo, fail, fire_and_forget, sell, slow


@kit.check
def success():
    result = add.delay(2, 3)
    value = result.get(timeout=FIRST_TIMEOUT)
    return {'value': value, 'state': result.state, 'status': result.status,
            'ready': result.ready(), 'successful': result.successful(),
            'failed': result.failed(), 'result': result.result, 'info': result.info,
            'traceback': result.traceback, 'id_is_str': isinstance(result.id, str),
            'id_matches_task_id': result.id == result.task_id}


@kit.check
def failure():
    result = fail.delay('bad value')
    try:
        result.get(timeout=TIMEOUT)
        raised = None
    except ValueError as exc:
        raised = {'class': exc_name(exc), 'args': list(exc.args)}
    returned = result.get(propagate=False, timeout=TIMEOUT)
    return {'raised': raised, 'state': result.state, 'ready': result.ready(),
            'successful': result.successful(), 'failed': result.failed(),
            'get_propagate_false': exc_name(returned),
            'result_class': exc_name(result.result),
            'traceback_present': result.traceback is not None,
            'traceback_names_error': 'ValueError' in (result.traceback or '')}


@kit.check
def project_exception_class():
    result = sell.delay('widget')
    try:
        result.get(timeout=TIMEOUT)
        return None
    except Exception as exc:
        return {'class': exc_name(exc), 'args': list(exc.args),
                'isinstance_OutOfStock': isinstance(exc, tasks.OutOfStock)}


@kit.check
def by_id():
    task_id = add.delay(20, 22).id
    return {'AsyncResult': AsyncResult(task_id, app=app).get(timeout=TIMEOUT),
            'app.AsyncResult': app.AsyncResult(task_id).get(timeout=TIMEOUT)}


@kit.check
def unknown_id_is_pending():
    result = app.AsyncResult('no-such-task-id')
    return {'state': result.state, 'ready': result.ready(), 'result': result.result}


@kit.check
def get_timeout():
    result = slow.delay(3)
    try:
        result.get(timeout=0.5)
        raised = None
    except TimeoutError as exc:
        raised = exc_name(exc)
    return {'raised': raised, 'state_meanwhile': result.state, 'value': result.get(timeout=TIMEOUT)}


@kit.check
def forget():
    result = add.delay(1, 1)
    result.get(timeout=TIMEOUT)
    result.forget()
    return app.AsyncResult(result.id).state


@kit.check
def result_types():
    values = [None, True, 1.5, 'text', [1, 'a'], {'k': [1, 2]}, (1, 2), {'nested': {'x': None}}]
    return [echo.delay(v).get(timeout=TIMEOUT) for v in values]


@kit.check
def ignore_result():
    result = fire_and_forget.delay('compat:fired')
    ran = bool(wait_until(lambda: redis_client().get('compat:fired'), timeout=TIMEOUT))
    return {'ran': ran, 'state': result.state, 'option': fire_and_forget.ignore_result}


@kit.check
def ignore_result_per_call():
    result = add.apply_async((1, 2), ignore_result=True)
    # Nothing is stored: wait a bit, then the state is still PENDING.
    wait_until(lambda: False, timeout=1)
    return result.state


kit.emit()
