"""The request context a task sees, compared with what the caller knows."""
from compatkit import FIRST_TIMEOUT, TIMEOUT, kit

from tasks import inspect_request, parent


def normalised(info, task_id, root_id=None, parent_id=None):
    info = dict(info)
    info['id'] = info['id'] == task_id
    info['root_id'] = info['root_id'] == (root_id or task_id)
    info['parent_id'] = info['parent_id'] if parent_id is None else info['parent_id'] == parent_id
    return info


@kit.check
def delay():
    result = inspect_request.delay(1, 'two', three=3)
    return normalised(result.get(timeout=FIRST_TIMEOUT), result.id)


@kit.check
def custom_headers():
    result = inspect_request.apply_async(headers={'tenant': 'acme'})
    return normalised(result.get(timeout=TIMEOUT), result.id)


@kit.check
def called_directly():
    info = inspect_request('local')
    return {k: info[k] for k in ('called_directly', 'args', 'retries', 'task')}


@kit.check
def parent_and_child():
    result = parent.delay()
    ids = result.get(timeout=TIMEOUT)
    child = inspect_request.AsyncResult(ids['child_id']).get(timeout=TIMEOUT)
    return {'parent_id_matches': ids['parent_id'] == result.id,
            'child': normalised(child, ids['child_id'], root_id=result.id, parent_id=result.id)}


kit.emit()
