"""``celery.exceptions``: the names Celery users catch, as fastq's own exceptions."""
from fastq.errors import (
    DecodeError,
    EncodeError,
    FastqError,
    Ignore,
    NotRegistered,
    Reject,
    SoftTimeLimitExceeded,
    TaskError,
    TaskRevokedError,
    TimeLimitExceeded,
    TimeoutError,
    UpstreamFailed,
)
from fastq.retry import MaxRetriesExceededError, Retry

CeleryError = FastqError
TaskPredicate = FastqError
ImproperlyConfigured = ValueError
SecurityError = FastqError
QueueNotFound = KeyError
ChordError = UpstreamFailed  # a chord whose header failed: its body fails with the cause
ChainError = UpstreamFailed
IncompleteStream = FastqError
InvalidTaskError = DecodeError
AlreadyRegistered = FastqError
OperationalError = ConnectionError


class WorkerLostError(FastqError):
    """A worker child died while it ran the task (fastq redelivers the message instead: the
    task is run again; this name exists for code that catches it)."""


class Terminated(FastqError):  # noqa: N818 - Celery's name
    """A task was terminated (revoke with terminate)."""


class CPendingDeprecationWarning(PendingDeprecationWarning):
    pass


class CDeprecationWarning(DeprecationWarning):
    pass


__all__ = ["AlreadyRegistered", "CDeprecationWarning", "CPendingDeprecationWarning", "CeleryError",
           "ChainError", "ChordError", "DecodeError", "EncodeError", "Ignore",
           "ImproperlyConfigured", "IncompleteStream", "InvalidTaskError",
           "MaxRetriesExceededError", "NotRegistered", "OperationalError", "QueueNotFound",
           "Reject", "Retry", "SecurityError", "SoftTimeLimitExceeded", "TaskError",
           "TaskPredicate", "TaskRevokedError", "Terminated", "TimeLimitExceeded", "TimeoutError",
           "WorkerLostError"]
