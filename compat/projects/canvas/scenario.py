"""Canvas: building workflows out of signatures."""
from celery import chain, chord, group, signature

from compatkit import FIRST_TIMEOUT, TIMEOUT, kit

from proj.tasks import add, identity, mul, tsum, xsum


@kit.check
def warm_up():
    return add.delay(1, 1).get(timeout=FIRST_TIMEOUT)


@kit.check
def chain_function():
    # ((2 + 2) + 4) * 8
    return chain(add.s(2, 2), add.s(4), mul.s(8))().get(timeout=TIMEOUT)


@kit.check
def chain_pipe():
    result = (add.s(2, 2) | mul.s(8)).apply_async()
    return {'value': result.get(timeout=TIMEOUT), 'parent': result.parent.get(timeout=TIMEOUT)}


@kit.check
def immutable_si():
    # The second task ignores the first one's result.
    return (add.s(1, 1) | add.si(10, 10)).delay().get(timeout=TIMEOUT)


@kit.check
def group_results():
    result = group(add.s(i, i) for i in range(5))()
    values = result.get(timeout=TIMEOUT)
    return {'values': values, 'successful': result.successful(),
            'completed_count': result.completed_count(), 'ready': result.ready(),
            'len': len(result)}


@kit.check
def chord_sum():
    return chord((add.s(i, i) for i in range(10)), xsum.s())().get(timeout=TIMEOUT)


@kit.check
def group_piped_into_task():
    # A group chained into a task is upgraded to a chord.
    return (group(mul.s(i, i) for i in range(4)) | tsum.s()).delay().get(timeout=TIMEOUT)


@kit.check
def chord_with_chains_in_header():
    header = [add.s(1, 1) | mul.s(10), add.s(2, 2) | mul.s(10)]
    return chord(header)(tsum.s()).get(timeout=TIMEOUT)


@kit.check
def chord_of_a_group():
    header = group(identity.s(x) for x in 'abc')
    return chord(header, identity.s()).delay().get(timeout=TIMEOUT)


@kit.check
def chain_ending_in_chord():
    workflow = add.s(1, 2) | group(mul.s(10), mul.s(100)) | tsum.s()
    return workflow.delay().get(timeout=TIMEOUT)


@kit.check
def link_callback():
    result = add.apply_async((2, 2), link=mul.s(10))
    value = result.get(timeout=TIMEOUT)
    children = result.children or []
    return {'value': value, 'children': [c.get(timeout=TIMEOUT) for c in children]}


@kit.check
def signature_by_name():
    return signature('proj.tasks.add', args=(3, 4)).delay().get(timeout=TIMEOUT)


@kit.check
def partial_and_clone():
    sig = add.s(2)
    clone = sig.clone(args=(5,))
    return {'partial': sig.delay(3).get(timeout=TIMEOUT), 'clone': clone.delay().get(timeout=TIMEOUT)}


@kit.check
def chunks():
    result = add.chunks(zip(range(10), range(10)), 3).delay()
    return result.get(timeout=TIMEOUT)


@kit.check
def map_and_starmap():
    return {'map': tsum.map([[1, 2], [3, 4], [5, 6]]).delay().get(timeout=TIMEOUT),
            'starmap': add.starmap(zip(range(4), range(4))).delay().get(timeout=TIMEOUT)}


@kit.check
def signature_serialization():
    sig = add.s(2, 2)
    return {'task': sig['task'], 'args': list(sig['args']),
            'group_is_group': isinstance(group(add.s(1, 1)), group)}


kit.emit()
