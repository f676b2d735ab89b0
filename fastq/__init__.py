"""fastq: a fast, crash-safe task queue on Redis Streams, and a drop-in replacement for Celery."""
from fastq.app import App, current_app
from fastq.errors import DecodeError, EncodeError, NotRegistered, TaskError
from fastq.result import AsyncResult
from fastq.task import Task

__version__ = "0.1.0"
__all__ = ["App", "AsyncResult", "DecodeError", "EncodeError", "NotRegistered", "Task", "TaskError",
           "current_app"]
