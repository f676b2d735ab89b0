"""Custom base classes: which handlers ran, with what, in which order."""
import json

from compatkit import FIRST_TIMEOUT, TIMEOUT, kit, redis_client, wait_until

from tasks import MyTask, add, counted, divide, greet, retry_once

store = redis_client()


def handlers(task_id, count):
    key = f'handlers:{task_id}'
    wait_until(lambda: store.llen(key) >= count, timeout=TIMEOUT)
    return [json.loads(r) for r in store.lrange(key, 0, -1)]


@kit.check
def on_success_and_after_return():
    result = add.delay(2, 3)
    return {'value': result.get(timeout=FIRST_TIMEOUT), 'handlers': handlers(result.id, 2)}


@kit.check
def on_failure_and_after_return():
    result = divide.delay(1, 0)
    result.get(timeout=TIMEOUT, propagate=False)
    return {'state': result.state, 'handlers': handlers(result.id, 2)}


@kit.check
def class_attribute_via_bind():
    return greet.delay('world').get(timeout=TIMEOUT)


@kit.check
def on_retry():
    result = retry_once.delay()
    return {'value': result.get(timeout=TIMEOUT), 'handlers': handlers(result.id, 3)}


@kit.check
def call_override():
    values = [counted.delay(i).get(timeout=TIMEOUT) for i in range(3)]
    return {'values': values, 'calls': int(store.get('calls:tasks.counted') or 0)}


@kit.check
def task_is_instance_of_base():
    return {'isinstance': isinstance(add, MyTask), 'greeting': add.greeting, 'name': add.name}


kit.emit()
