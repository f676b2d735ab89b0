"""fastq: a fast, crash-safe task queue on Redis Streams, and a drop-in replacement for Celery."""
from fastq.app import App, current_app
from fastq.errors import BrokerUnavailable, DecodeError, EncodeError, NotRegistered, TaskError
from fastq.middleware import DeferMessage, Middleware, SkipMessage
from fastq.result import AsyncResult
from fastq.task import Task

__version__ = "0.1.0"
__all__ = ["App", "AsyncResult", "BrokerUnavailable", "DecodeError", "DeferMessage", "EncodeError",
           "Middleware", "NotRegistered", "SkipMessage", "Task", "TaskError", "current_app"]
