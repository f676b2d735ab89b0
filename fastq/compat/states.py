"""``celery.states``: Celery's state names (fastq's are the same strings)."""
from fastq.states import (
    ALL_STATES,
    EXCEPTION_STATES,
    FAILURE,
    IGNORED,
    PENDING,
    READY_STATES,
    RECEIVED,
    REJECTED,
    RETRY,
    REVOKED,
    STARTED,
    SUCCESS,
)

UNREADY_STATES = frozenset({PENDING, RECEIVED, STARTED, REJECTED, RETRY})
PROPAGATE_STATES = frozenset({FAILURE, REVOKED})

__all__ = ["ALL_STATES", "EXCEPTION_STATES", "FAILURE", "IGNORED", "PENDING", "PROPAGATE_STATES",
           "READY_STATES", "RECEIVED", "REJECTED", "RETRY", "REVOKED", "STARTED", "SUCCESS",
           "UNREADY_STATES"]
