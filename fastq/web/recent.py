"""The dashboard's recent tasks, newest first, with their latest state: those submitted through
the web API (and beat entries it triggered), and, while workers run with ``-E``, every task their
events tell of (fastq's event stream, fastq/events/), failures with their tracebacks
(docs/web.md)."""
from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from fastq import states
from fastq.events.records import from_entry

if TYPE_CHECKING:
    from fastq.app import App

PREVIEW_CHARS = 200  # a result is shown as a repr cut to this length
EVENT_STATES = {"task-received": states.RECEIVED, "task-started": states.STARTED,
                "task-succeeded": states.SUCCESS, "task-failed": states.FAILURE,
                "task-retried": states.RETRY, "task-revoked": states.REVOKED,
                "task-rejected": states.REJECTED}


class RecentTasks:
    def __init__(self, size: int = 50):
        self.size = size
        self._tasks: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._lock = threading.Lock()
        self._cursor = "$"  # fastq's event stream, followed from when the server started

    def add(self, task_id: str, name: str, queue: str) -> None:
        with self._lock:
            self._tasks[task_id] = {"id": task_id, "name": name, "queue": queue,
                                    "submitted_at": time.time(), "state": states.PENDING,
                                    "result": None, "traceback": None}
            self._tasks.move_to_end(task_id, last=False)
            while len(self._tasks) > self.size:
                self._tasks.popitem()

    def follow(self, app: App) -> None:
        """Take in the workers' task events since the last call (none without ``-E``)."""
        self._cursor, entries = app.broker.events_since(self._cursor, None, count=1000)
        for fields in entries:
            for event in from_entry(fields):
                state = EVENT_STATES.get(event.get("type"))
                if state is not None:
                    self._take(event, state)

    def _take(self, event: dict[str, Any], state: str) -> None:
        task_id = event["uuid"]
        with self._lock:
            task = self._tasks.get(task_id)
            if task is None:
                if event["type"] != "task-received":
                    return  # received before the server followed the stream
                task = self._tasks[task_id] = {
                    "id": task_id, "name": event["name"], "queue": event.get("queue"),
                    "submitted_at": event["timestamp"], "state": state, "result": None,
                    "traceback": None}
                self._tasks.move_to_end(task_id, last=False)
                while len(self._tasks) > self.size:
                    self._tasks.popitem()
            if task["state"] in states.READY_STATES:
                return
            task["state"] = state
            if "result" in event:
                task["result"] = event["result"][:PREVIEW_CHARS]
            if "exception" in event:
                task["result"] = event["exception"][:PREVIEW_CHARS]
                task["traceback"] = event.get("traceback")

    def refresh(self, app: App) -> None:
        """Read the state of each task not finished yet (finished ones do not change)."""
        with self._lock:
            todo = [t["id"] for t in self._tasks.values() if t["state"] not in states.READY_STATES]
        for task_id in todo:
            res = app.AsyncResult(task_id)
            state = res.state
            update: dict[str, Any] = {"state": state}
            if state == states.SUCCESS:
                update["result"] = repr(res.result)[:PREVIEW_CHARS]
            elif state in states.EXCEPTION_STATES:
                update["result"] = repr(res.result)[:PREVIEW_CHARS]
                update["traceback"] = res.traceback
            with self._lock:
                if task_id in self._tasks:
                    self._tasks[task_id].update(update)

    def list(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(t) for t in self._tasks.values()]
