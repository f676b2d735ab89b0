"""Time limits: soft (an exception inside the task) and hard (the task's process is killed)."""
from celery.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded

from compatkit import FIRST_TIMEOUT, TIMEOUT, exc_name, kit

from tasks import add, cleanup_on_soft_limit, hard_limited, ignores_soft_limit, sleeper


def outcome(result):
    try:
        return {'value': result.get(timeout=TIMEOUT), 'state': result.state}
    except Exception as exc:
        return {'raised': exc_name(exc), 'state': result.state,
                'is_TimeLimitExceeded': isinstance(exc, TimeLimitExceeded),
                'is_SoftTimeLimitExceeded': isinstance(exc, SoftTimeLimitExceeded)}


@kit.check
def warm_up():
    return add.delay(1, 1).get(timeout=FIRST_TIMEOUT)


@kit.check
def under_the_limit():
    return outcome(cleanup_on_soft_limit.delay(0.1))


@kit.check
def soft_limit_caught():
    return outcome(cleanup_on_soft_limit.delay(5))


@kit.check
def soft_limit_uncaught():
    return outcome(ignores_soft_limit.delay(5))


@kit.check
def hard_limit():
    return outcome(hard_limited.delay(5))


@kit.check
def worker_still_works_after_hard_kill():
    return [add.delay(i, i).get(timeout=TIMEOUT) for i in range(3)]


@kit.check
def soft_limit_per_call():
    return outcome(sleeper.apply_async((5,), soft_time_limit=1))


@kit.check
def hard_limit_per_call():
    return outcome(sleeper.apply_async((5,), time_limit=1))


@kit.check
def task_options():
    return {'soft_time_limit': cleanup_on_soft_limit.soft_time_limit,
            'time_limit': hard_limited.time_limit}


kit.emit()
