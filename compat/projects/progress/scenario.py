"""Progress: poll a task's state and meta while it runs."""
import time

from compatkit import FIRST_TIMEOUT, TIMEOUT, kit

from tasks import custom_final_state, process, slow

TOTAL = 5


def watch(result, timeout):
    """Poll until ready; return the distinct (state, info) pairs seen, in order."""
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = result.ready()  # asked first: once done, the state read next is the final one
        state, info = result.state, result.info
        if state not in ('PENDING',):
            pair = (state, info if isinstance(info, dict) else repr(info))
            if not seen or seen[-1] != pair:
                seen.append(pair)
        if done:
            break
        time.sleep(0.02)
    return seen


@kit.check
def progress_states():
    result = process.delay(TOTAL)
    seen = watch(result, FIRST_TIMEOUT)
    progress = [info for state, info in seen if state == 'PROGRESS']
    return {
        'progress_seen': bool(progress),
        'meta_keys': sorted(progress[0]) if progress else None,
        'meta_total': progress[0]['total'] if progress else None,
        'last_progress_current': progress[-1]['current'] if progress else None,
        'currents_increase': [p['current'] for p in progress] == sorted(p['current'] for p in progress),
        'final_state': result.state,
        'final_result': result.get(timeout=TIMEOUT),
        'final_info': result.info,
    }


@kit.check
def track_started():
    result = slow.delay(1)
    states = []
    for state, _ in watch(result, TIMEOUT):  # state and info are two reads: a write can fall
        if not states or states[-1] != state:  # between them, so keep each state once
            states.append(state)
    return {'states': states, 'value': result.get(timeout=TIMEOUT)}


@kit.check
def custom_state_then_success():
    result = custom_final_state.delay()
    states = []
    for state, _ in watch(result, TIMEOUT):  # state and info are two reads: a write can fall
        if not states or states[-1] != state:  # between them, so keep each state once
            states.append(state)
    return {'states': states, 'value': result.get(timeout=TIMEOUT)}


kit.emit()
