"""Exceptions raised by fastq. Celery's names are re-exported by ``fastq.compat``."""
from __future__ import annotations


class FastqError(Exception):
    """Base class of every fastq error."""


class DecodeError(FastqError):
    """A message or result could not be decoded (malformed, truncated, or a codec not accepted)."""


class EncodeError(FastqError):
    """Arguments or a result could not be encoded with the chosen serializer."""


class NotRegistered(FastqError, KeyError):
    """A task name that this process does not know."""

    def __str__(self) -> str:  # KeyError would quote the message
        return Exception.__str__(self)


class TimeoutError(FastqError, TimeoutError):  # noqa: A001 - mirrors celery.exceptions.TimeoutError
    """``AsyncResult.get(timeout=...)`` ran out of time."""


class BrokerUnavailable(FastqError, ConnectionError):
    """The broker cannot be reached or refuses work for now (connection lost, timed out, loading,
    out of memory), or none answers and none could be started. Workers retry with back-off."""


class BrokerOutOfMemory(BrokerUnavailable):
    """The broker refused a write because it is out of memory (``maxmemory`` with
    ``noeviction``): nothing of that write was applied; retry once memory is freed."""


class BrokerRefused(FastqError):
    """The broker refused a command as invalid (a key of the wrong type, a script's own error):
    nothing transient, so the same command fails the same way again. Log it, do not retry it."""


class TaskError(FastqError):
    """A task failed with an exception this process cannot rebuild with its own type.

    ``remote_type`` is the dotted name of the exception class on the worker, ``remote_message`` its
    message and ``remote_traceback`` the formatted traceback.
    """

    def __init__(self, remote_type: str, remote_message: str, remote_traceback: str | None = None):
        super().__init__(f"{remote_type}: {remote_message}")
        self.remote_type = remote_type
        self.remote_message = remote_message
        self.remote_traceback = remote_traceback


class SoftTimeLimitExceeded(FastqError):
    """Raised inside a task that ran past its ``soft_time_limit``; the task may catch it."""


class TimeLimitExceeded(FastqError):
    """A task ran past its hard ``time_limit`` and its worker child was killed."""


class DeadLettered(FastqError):
    """The task's message went to the dead-letter queue without a result of its own (poison,
    unknown task, undecodable body): the message says why. ``fastq dlq requeue`` runs it again."""


class TaskRevokedError(FastqError):
    """The task was revoked (or expired) before or while it ran."""


class Ignore(FastqError):  # noqa: N818 - Celery's name
    """Raised by a task: acknowledge its message and write no outcome (its state stays as the
    task left it, e.g. through ``update_state``)."""


class Replaced(Ignore):
    """Raised by ``Task.replace``: the task handed its place to another signature or canvas."""


class Reject(FastqError):  # noqa: N818 - Celery's name
    """Raised by a task: refuse its message. ``requeue=True`` puts it back in its queue (it runs
    again); otherwise it is kept in the dead-letter queue with ``reason`` and its state is
    REJECTED."""

    def __init__(self, reason: object = None, requeue: bool = False):
        super().__init__(reason, requeue)
        self.reason = reason
        self.requeue = requeue

    def __str__(self) -> str:
        return f"rejected: {self.reason}" if self.reason is not None else "rejected"


class WorkflowError(FastqError, ValueError):
    """A workflow that cannot run (a cycle, an unknown node, an empty chain): nothing was sent."""


class UpstreamFailed(FastqError):
    """A workflow node did not run because a node it waits for failed (or was revoked).

    ``node_id`` is the failed node's task id, ``exc_type`` and ``exc_message`` its exception's."""

    def __init__(self, node_id: str, exc_type: str = "", exc_message: str = ""):
        super().__init__(node_id, exc_type, exc_message)
        self.node_id = node_id
        self.exc_type = exc_type
        self.exc_message = exc_message

    def __str__(self) -> str:
        return f"upstream task {self.node_id} failed: {self.exc_type}: {self.exc_message}"
