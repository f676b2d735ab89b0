"""Eager mode: no worker runs; every call executes at once in this process."""
from celery import group

from compatkit import TIMEOUT, exc_name, kit

from tasks import add, context, fail, retrying


@kit.check
def delay_runs_inline():
    result = add.delay(2, 2)
    return {'value': result.get(timeout=TIMEOUT), 'state': result.state, 'ready': result.ready(),
            'successful': result.successful()}


@kit.check
def propagates():
    try:
        fail.delay()
    except ValueError as exc:
        return {'raised_at_call': exc_name(exc), 'args': list(exc.args)}
    return {'raised_at_call': None}


@kit.check
def apply_without_propagation():
    result = fail.apply(throw=False)
    return {'state': result.state, 'result': exc_name(result.result), 'failed': result.failed()}


@kit.check
def request_is_eager():
    return context.delay().get(timeout=TIMEOUT)


@kit.check
def canvas_eagerly():
    return {'chain': (add.s(1, 2) | add.s(3)).delay().get(timeout=TIMEOUT),
            'group': group(add.s(i, i) for i in range(3)).delay().get(timeout=TIMEOUT)}


@kit.check
def retries_inline():
    # Countdowns are ignored in eager mode: the retry runs at once, and the Retry
    # exception propagates to the caller (task_eager_propagates).
    try:
        return {'value': retrying.delay().get(timeout=TIMEOUT)}
    except Exception as exc:
        return {'raised': exc_name(exc)}


kit.emit()
