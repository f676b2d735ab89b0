"""Next steps: the proj layout, calling API (delay/apply_async/signatures), countdown, expires."""
from compatkit import FIRST_TIMEOUT, TIMEOUT, exc_name, kit

from proj.celery import app
from proj.tasks import add, mul, xsum


@kit.check
def delay():
    return add.delay(2, 2).get(timeout=FIRST_TIMEOUT)


@kit.check
def apply_async_countdown():
    result = add.apply_async((2, 2), countdown=1)
    return {'state_at_once': result.state, 'value': result.get(timeout=TIMEOUT)}


@kit.check
def xsum_list():
    return xsum.delay([1, 2, 3, 4]).get(timeout=TIMEOUT)


@kit.check
def signature_delay():
    sig = add.signature((2, 2), countdown=1)
    return {'task': sig.task, 'args': list(sig.args), 'options': sig.options,
            'value': sig.delay().get(timeout=TIMEOUT)}


@kit.check
def s_shortcut_partial():
    # add.s(2) is incomplete; the missing argument comes at call time.
    partial = add.s(2)
    return [partial.delay(8).get(timeout=TIMEOUT), mul.s(3).apply_async((5,)).get(timeout=TIMEOUT)]


@kit.check
def expired_before_run():
    # The message can only run after 2 s but expires after 1 s: it is revoked, never run.
    result = add.apply_async((1, 1), countdown=2, expires=1)
    try:
        value = result.get(timeout=TIMEOUT)
    except Exception as exc:
        return {'raised': exc_name(exc), 'state': result.state}
    return {'value': value, 'state': result.state}


@kit.check
def config():
    return {'result_expires': app.conf.result_expires, 'main': app.main,
            'names': sorted(n for n in app.tasks if n.startswith('proj.'))}


kit.emit()
