"""fastq: a fast, crash-safe task queue on Redis Streams, and a drop-in replacement for Celery."""
from fastq.app import App, current_app
from fastq.errors import (
    BrokerUnavailable,
    DecodeError,
    EncodeError,
    NotRegistered,
    TaskError,
    UpstreamFailed,
    WorkflowError,
)
from fastq.middleware import DeferMessage, Middleware, SkipMessage
from fastq.result import AsyncResult
from fastq.task import Task
from fastq.workflows import (
    Dag,
    DagResult,
    GroupResult,
    Signature,
    chain,
    chord,
    chunks,
    group,
    signature,
)

__version__ = "0.1.0"
__all__ = ["App", "AsyncResult", "BrokerUnavailable", "Dag", "DagResult", "DecodeError",
           "DeferMessage", "EncodeError", "GroupResult", "Middleware", "NotRegistered",
           "Signature", "SkipMessage", "Task", "TaskError", "UpstreamFailed", "WorkflowError",
           "chain", "chord", "chunks", "current_app", "group", "signature"]
