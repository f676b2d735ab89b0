"""Small helpers for the compat kit's ``scenario.py`` drivers (not part of any project).

A scenario records *outcomes*: values, state names and exception class names that must be the
same on every implementation of Celery's API. Each check is a function run at once by the
``@kit.check`` decorator; its return value is stored under the function's name. A check that
raises is stored as ``{"__error__": "<ExceptionClassName>"}`` so that one missing feature does
not hide the outcomes of the others. ``kit.emit()`` prints the one JSON object on stdout.

This module imports nothing of Celery: it is the same for every implementation.
"""
from __future__ import annotations

import faulthandler
import json
import os
import sys
import time
import traceback

BROKER_URL = os.environ.get("COMPAT_BROKER_URL", "redis://127.0.0.1:6379/0")
FIRST_TIMEOUT = float(os.environ.get("COMPAT_FIRST_TIMEOUT", 60))  # the worker may still be starting
TIMEOUT = float(os.environ.get("COMPAT_TIMEOUT", 20))

# Shortly before the runner gives up on this scenario, dump every thread's stack to stderr:
# the runner shows the tail, i.e. where the scenario hung.
if os.environ.get("COMPAT_SCENARIO_DEADLINE"):
    faulthandler.dump_traceback_later(float(os.environ["COMPAT_SCENARIO_DEADLINE"]), exit=False)


def redis_client():
    """A redis-py client on the broker URL (the observation channel of tasks and handlers)."""
    import redis
    return redis.Redis.from_url(BROKER_URL, decode_responses=True)


def wait_until(predicate, timeout: float = TIMEOUT, interval: float = 0.05):
    """Poll ``predicate()`` until it returns something truthy; return it (or the last falsy value)."""
    deadline = time.monotonic() + timeout
    value = predicate()
    while not value and time.monotonic() < deadline:
        time.sleep(interval)
        value = predicate()
    return value


def exc_name(exc: BaseException | None) -> str | None:
    return None if exc is None else type(exc).__name__


class Kit:
    def __init__(self) -> None:
        self.outcomes: dict = {}

    def check(self, fn):
        """Run ``fn()`` now and record its value (or the class name of what it raised)."""
        name = fn.__name__
        try:
            self.outcomes[name] = fn()
        except Exception as exc:  # noqa: BLE001 - the class name *is* the outcome
            self.outcomes[name] = {"__error__": type(exc).__name__}
            print(f"check {name!r} raised:", file=sys.stderr)
            traceback.print_exc(file=sys.stderr)
        return fn

    def emit(self) -> None:
        sys.stdout.flush()
        print(json.dumps(self.outcomes, sort_keys=True, default=repr))
        sys.stdout.flush()


kit = Kit()
