"""Task-failure alerts: a middleware that counts a child's failed tasks per task name, and hands
one aggregated alert per task name and ``alert_check_s`` to the child's delivery thread.

On the task path it only adds to an in-memory count (no I/O, no wait); the delivery thread
(fastq/alerts/delivery.py), started in ``child_init``, collects the counts each interval. A storm
of 10 000 failures of one task is one alert per child and interval, with the count, the last
error and the last task id; beyond ``MOST_TASKS`` failing task names, the rest share one alert.
Retries, and tasks that raised ``Ignore``/``Reject`` or were skipped,
are not failures.
"""
from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from fastq.alerts.alert import TASK_FAILED, Alert
from fastq.alerts.delivery import Delivery
from fastq.errors import Ignore, Reject
from fastq.middleware import Middleware, SkipMessage

if TYPE_CHECKING:
    from fastq.message import Message

NOT_FAILURES = (SkipMessage, Ignore, Reject)
MOST_TASKS = 10  # task names a child reports one by one per interval; the rest in one alert


class FailureAlerts(Middleware):
    """Installed by the worker when alerts are configured (fastq/worker/supervisor.py)."""

    def __init__(self, app: Any):
        self.app = app
        self.delivery: Delivery | None = None
        self.consumer = "?"
        self._counts: dict[str, list] = {}  # task name -> [count, last error, last id, queue]
        self._lock = threading.Lock()
        self._retrying: str | None = None  # id of the message on_retry just saw

    def child_init(self, child: Any) -> None:
        self.consumer = child.consumer
        self._counts = {}
        self._lock = threading.Lock()  # not one a thread of the parent may have held
        self.delivery = Delivery(self.app.settings, self.app.alert_callbacks)
        self.delivery.sources.append(self.collect)
        self.delivery.start()

    def child_shutdown(self, child: Any) -> None:
        if self.delivery is not None:
            self.delivery.close()

    def on_retry(self, task: Any, message: Message, exc: BaseException, countdown: float) -> None:
        self._retrying = message.id

    def after_execute(self, task: Any, message: Message, result: Any = None,
                      exc: BaseException | None = None) -> None:
        if exc is None or isinstance(exc, NOT_FAILURES):
            return
        if self._retrying == message.id:  # on_retry came first: it will run again
            self._retrying = None
            return
        with self._lock:
            seen = self._counts.get(task.name)
            if seen is None:
                self._counts[task.name] = [1, repr(exc), message.id, message.queue]
            else:
                seen[0] += 1
                seen[1:] = repr(exc), message.id, message.queue

    def collect(self) -> list[Alert]:
        """The failures counted since the last call: one alert per task name, for the
        ``MOST_TASKS`` that failed most; the other tasks' failures together in one more."""
        with self._lock:
            counts, self._counts = self._counts, {}
        interval = self.app.settings.alert_check_s
        ranked = sorted(counts.items(), key=lambda item: -item[1][0])
        out = [Alert(TASK_FAILED, f"{n} failure{'s' if n > 1 else ''} of {name} in the last "
                     f"{interval:g} s: {error}",
                     {"task": name, "count": n, "last_error": error, "last_id": task_id,
                      "queue": queue, "interval_s": interval}, self.consumer)
               for name, (n, error, task_id, queue) in ranked[:MOST_TASKS]]
        if len(ranked) > MOST_TASKS:
            rest = {name: seen[0] for name, seen in ranked[MOST_TASKS:]}
            out.append(Alert(TASK_FAILED, f"{sum(rest.values())} failures of {len(rest)} other "
                             f"tasks in the last {interval:g} s",
                             {"task": None, "count": sum(rest.values()), "tasks": rest,
                              "interval_s": interval}, self.consumer))
        return out
