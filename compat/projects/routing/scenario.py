"""Routing: which queue each task was delivered on (as the task itself sees it)."""
import time

from compatkit import FIRST_TIMEOUT, TIMEOUT, kit

from proj.other import task_option_queue, unrouted
from proj.tasks import by_glob, to_a, urgent


@kit.check
def default_queue():
    return unrouted.delay().get(timeout=FIRST_TIMEOUT)


@kit.check
def exact_name_route():
    return to_a.delay().get(timeout=TIMEOUT)


@kit.check
def glob_route():
    return by_glob.delay().get(timeout=TIMEOUT)


@kit.check
def router_function_wins_over_glob():
    return urgent.delay().get(timeout=TIMEOUT)


@kit.check
def queue_task_option():
    return task_option_queue.delay().get(timeout=TIMEOUT)


@kit.check
def apply_async_queue_overrides_route():
    return [to_a.apply_async(queue='b').get(timeout=TIMEOUT),
            unrouted.apply_async(queue='a').get(timeout=TIMEOUT)]


@kit.check
def unconsumed_queue_stays_pending():
    # Nobody consumes queue "c": the task is not run.
    result = by_glob.apply_async(queue='c')
    time.sleep(1.5)
    return result.state


kit.emit()
