"""Signals: what each handler received, per task call, in the order they fired."""
import json

from compatkit import FIRST_TIMEOUT, TIMEOUT, kit, redis_client, wait_until

from tasks import add, fail

store = redis_client()


def records():
    return [json.loads(r) for r in store.lrange('signals', 0, -1)]


def shape(task_id, expected_count):
    """The signals about one task, ids replaced by whether they match the task's id."""
    def mine():
        found = [r for r in records() if r.get('task_id') == task_id]
        return found if len(found) >= expected_count else None
    found = wait_until(mine, timeout=TIMEOUT) or [r for r in records() if r.get('task_id') == task_id]
    for record in found:
        record['task_id'] = record['task_id'] == task_id
    # Publishing happens in this process, running in the worker: each side keeps its own order.
    client = [r for r in found if r['signal'].endswith('_publish')]
    return {'client': client, 'worker': [r for r in found if r not in client]}


@kit.check
def worker_signals():
    # worker_ready fires once in the main process, worker_process_init in each pool child.
    wait_until(lambda: store.get('worker_ready'), timeout=FIRST_TIMEOUT)
    return {'worker_ready': int(store.get('worker_ready') or 0) >= 1,
            'worker_process_init': int(store.get('worker_process_init') or 0) >= 1}


@kit.check
def success_signals():
    result = add.delay(2, 3)
    result.get(timeout=FIRST_TIMEOUT)
    return shape(result.id, 5)


@kit.check
def failure_signals():
    result = fail.delay('missing')
    result.get(timeout=TIMEOUT, propagate=False)
    return shape(result.id, 5)


@kit.check
def kwargs_in_signals():
    result = add.apply_async(kwargs={'x': 1, 'y': 2})
    result.get(timeout=TIMEOUT)
    return [(r['signal'], r.get('args'), r.get('kwargs')) for r in shape(result.id, 5)['worker']
            if r['signal'] in ('task_prerun', 'task_postrun')]


kit.emit()
