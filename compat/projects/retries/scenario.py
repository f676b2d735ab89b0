"""Retries: automatic and explicit, with backoff, and what happens when they run out."""
from celery.exceptions import MaxRetriesExceededError

from compatkit import FIRST_TIMEOUT, TIMEOUT, exc_name, kit, redis_client

from tasks import always_down, fetch, flaky, give_up_gracefully, give_up_loudly, retry_with_override

store = redis_client()


def attempts(key):
    times = [float(t) for t in store.lrange(f'attempts:{key}', 0, -1)]
    return {'count': len(times),
            'gaps': [round(b - a) for a, b in zip(times, times[1:])]}


def outcome(result, key, timeout=TIMEOUT):
    try:
        value = result.get(timeout=timeout)
    except Exception as exc:
        value = {'raised': exc_name(exc)}
    return {'value': value, 'state': result.state, 'attempts': attempts(key)}


@kit.check
def autoretry_with_backoff():
    # Two failures: retried after 1 s then 2 s (no jitter), then succeeds.
    return outcome(flaky.delay('backoff', 2), 'backoff', FIRST_TIMEOUT)


@kit.check
def autoretry_exhausted():
    return outcome(always_down.delay('exhausted'), 'exhausted')


@kit.check
def retry_with_exc():
    return outcome(fetch.delay('exc'), 'exc')


@kit.check
def max_retries_exceeded_caught():
    return outcome(give_up_gracefully.delay('caught'), 'caught')


@kit.check
def max_retries_exceeded_raised():
    result = give_up_loudly.delay('raised')
    try:
        result.get(timeout=TIMEOUT)
        is_max = False
    except MaxRetriesExceededError:
        is_max = True
    except Exception:
        is_max = False
    return dict(outcome(result, 'raised'), isinstance_MaxRetriesExceededError=is_max)


@kit.check
def retry_max_retries_override():
    return outcome(retry_with_override.delay('override'), 'override')


@kit.check
def task_options():
    return {'flaky.max_retries': flaky.max_retries,
            'flaky.retry_backoff': flaky.retry_backoff,
            'flaky.retry_jitter': flaky.retry_jitter,
            'fetch.default_retry_delay': fetch.default_retry_delay,
            'default_max_retries': retry_with_override.max_retries}


kit.emit()
