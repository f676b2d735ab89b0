"""``celery.contrib.abortable``: tasks a client can ask to stop, which check while they run.

``AbortableAsyncResult(task_id).abort()`` sets the task's state to ABORTED (through the same
state record ``update_state`` writes, so it is visible at once); a task with
``base=AbortableTask`` calls ``self.is_aborted()`` at points of its choosing and returns early.
As in Celery, nothing stops a task that does not look, and a task that writes another state
(``update_state``) after the abort hides it. A task that finishes writes its own outcome, which
replaces the ABORTED state once it is stored.
"""
from __future__ import annotations

from typing import Any

from fastq.compat.task import CeleryTask
from fastq.message import CODEC_MSGPACK
from fastq.result import AsyncResult, state_record

ABORTED = "ABORTED"


class AbortableAsyncResult(AsyncResult):
    """An AsyncResult that can ask its task to stop."""

    def is_aborted(self) -> bool:
        return self.state == ABORTED

    def abort(self) -> None:
        """Set the task's state to ABORTED (the task sees it at its next ``is_aborted()``)."""
        conf = self.app.settings
        record = state_record(ABORTED, None, "", CODEC_MSGPACK, conf.compress_threshold)
        self.app.broker.set_state(self.id, record, int(conf.result_expires * 1000))


class AbortableTask(CeleryTask):
    """A base class (``@app.task(bind=True, base=AbortableTask)``) whose tasks can check
    whether a client asked them to stop."""

    def AsyncResult(self, task_id: str) -> AbortableAsyncResult:  # noqa: N802 - Celery's name
        return AbortableAsyncResult(task_id, self.app)

    def is_aborted(self, **kwargs: Any) -> bool:
        """Whether this run (or ``task_id=``) was asked to stop."""
        task_id = kwargs.get("task_id") or self.request.id
        return self.AsyncResult(task_id).is_aborted()


__all__ = ["ABORTED", "AbortableAsyncResult", "AbortableTask"]
