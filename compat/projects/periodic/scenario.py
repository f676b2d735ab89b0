"""Periodic tasks: wait until each schedule entry has fired at least twice."""
from collections import Counter

from compatkit import FIRST_TIMEOUT, kit, redis_client, wait_until

from tasks import app

store = redis_client()
NAMES = ('timedelta', 'seconds', 'added')


def counts():
    return Counter(store.lrange('ticks', 0, -1))


@kit.check
def each_entry_fired_twice():
    wait_until(lambda: all(counts()[n] >= 2 for n in NAMES), timeout=FIRST_TIMEOUT)
    seen = counts()
    return {name: seen[name] >= 2 for name in NAMES}


@kit.check
def nothing_else_fired():
    return sorted(set(counts()) - set(NAMES))


@kit.check
def schedule_config():
    entry = app.conf.beat_schedule['tick-every-second']
    return {'entries': sorted(app.conf.beat_schedule), 'task': entry['task'],
            'seconds': entry['schedule'].total_seconds()}


kit.emit()
