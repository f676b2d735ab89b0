"""structlog set-up: console lines or JSON (``--log-format``, ``FASTQ_LOG_FORMAT``; the older
``FASTQ_LOG_JSON=1`` still means JSON).

Every line logged while a task runs carries ``task_id``, ``task_name``, ``queue`` and
``attempt``: a processor reads them from the running task's request (a context variable the
child sets anyway), so binding them costs a task nothing. The standard library's ``logging``
(a task's ``logging.getLogger(__name__)``, Celery's ``get_task_logger``) goes through the same
processors once :func:`capture_stdlib` ran (``fastq worker`` / ``fastq beat`` do).
"""
from __future__ import annotations

import logging
import os
import sys
import time
from typing import Any

import structlog

from fastq.middleware import Middleware

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
          "error": logging.ERROR, "critical": logging.CRITICAL}
FORMATS = ("console", "json")
_HANDLER_MARK = "_fastq_handler"


def log_format(fmt: str | None = None) -> str:
    """The format asked for: ``fmt``, else FASTQ_LOG_FORMAT, else FASTQ_LOG_JSON, else console."""
    fmt = fmt or os.environ.get("FASTQ_LOG_FORMAT") or (
        "json" if os.environ.get("FASTQ_LOG_JSON", "") not in ("", "0") else "console")
    if fmt not in FORMATS:
        raise ValueError(f"unknown log format {fmt!r}: use one of {', '.join(FORMATS)}")
    return fmt


def _task_context(_logger: Any, _method: str, event: dict[str, Any]) -> dict[str, Any]:
    from fastq.task import current_request  # a leaf module: no import cycle at load time

    msg = current_request.get()
    if msg is not None:
        event.setdefault("task_id", msg.id)
        event.setdefault("task_name", msg.task)
        event.setdefault("queue", msg.queue)
        event.setdefault("attempt", msg.attempt)
    return event


def _shared() -> list:
    return [structlog.contextvars.merge_contextvars, _task_context,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True)]


def _renderer(fmt: str) -> Any:
    return (structlog.processors.JSONRenderer() if fmt == "json"
            else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty()))


def configure(level: str = "info", json: bool | None = None, fmt: str | None = None) -> None:
    """Configure structlog for this process (workers call it before forking children)."""
    fmt = log_format("json" if json else fmt)
    structlog.configure(
        processors=[*_shared(), structlog.processors.format_exc_info, _renderer(fmt)],
        wrapper_class=structlog.make_filtering_bound_logger(LEVELS.get(level.lower(), logging.INFO)),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=False,
    )


def capture_stdlib(level: str = "info", fmt: str | None = None) -> None:
    """Render the root logger's lines as fastq's own (same format, task fields, stderr)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        processor=_renderer(log_format(fmt)),
        foreign_pre_chain=[*_shared(), structlog.stdlib.add_logger_name,
                           structlog.processors.format_exc_info]))
    setattr(handler, _HANDLER_MARK, True)
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _HANDLER_MARK, False)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(LEVELS.get(level.lower(), logging.INFO))


class TaskLog(Middleware):
    """One info line per task run (``fastq worker --log-tasks``): off by default, since a line
    per task costs more than a no-op task."""

    def __init__(self) -> None:
        self._log = structlog.get_logger("fastq.task")
        self._started: dict[str, float] = {}

    def before_execute(self, task: Any, message: Any) -> None:
        self._started[message.id] = time.perf_counter()

    def after_execute(self, task: Any, message: Any, result: Any = None,
                      exc: BaseException | None = None) -> None:
        started = self._started.pop(message.id, None)
        took = round(time.perf_counter() - started, 6) if started is not None else None
        outcome = "succeeded" if exc is None else type(exc).__name__
        self._log.info("task done", task_id=message.id, task_name=message.task,
                       queue=message.queue, attempt=message.attempt, outcome=outcome,
                       runtime_s=took)
