"""The tasks submitted through the web API (and beat entries it triggered), newest first, with
their latest state. fastq keeps no global task log, so this is what the dashboard's "recent tasks"
shows (docs/web.md); failures elsewhere show up as dead letters."""
from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from fastq import states

if TYPE_CHECKING:
    from fastq.app import App

PREVIEW_CHARS = 200  # a result is shown as a repr cut to this length


class RecentTasks:
    def __init__(self, size: int = 50):
        self.size = size
        self._tasks: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, task_id: str, name: str, queue: str) -> None:
        with self._lock:
            self._tasks[task_id] = {"id": task_id, "name": name, "queue": queue,
                                    "submitted_at": time.time(), "state": states.PENDING,
                                    "result": None, "traceback": None}
            self._tasks.move_to_end(task_id, last=False)
            while len(self._tasks) > self.size:
                self._tasks.popitem()

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
