"""The Celery-facing API: ``from fastq.compat import Celery`` instead of ``from celery import Celery``.

Celery's names, in Celery's layout where users import from submodules (``fastq.compat.exceptions``,
``.signals``, ``.schedules``, ``.states``, ``.result``, ``.canvas``), built on the native API. What
differs from Celery, and why, is in docs/migrating-from-celery.md.

Priorities: Celery's Redis transport orders 0 (highest) .. 9 (lowest); they map onto fastq's five
levels two by two: 0-1 critical, 2-3 high, 4-5 normal, 6-7 low, 8-9 batch.
"""
from __future__ import annotations

from typing import Any

from fastq import current
from fastq.compat import exceptions, schedules, signals, states
from fastq.compat.app import Celery, shared_task
from fastq.compat.canvas import (
    Signature,
    chain,
    chord,
    chunks,
    group,
    maybe_signature,
    signature,
    subtask,
    xmap,
    xstarmap,
)
from fastq.compat.config import CompatWarning
from fastq.compat.result import AsyncResult, EagerResult, GroupResult
from fastq.compat.schedules import crontab, schedule, solar
from fastq.compat.task import CeleryTask, celery_priority
from fastq.task import resolve_priority

Task = CeleryTask


class _Proxy:
    """A stand-in that forwards to what ``target()`` gives at the time of use (Celery's
    ``current_app`` and ``current_task`` are such proxies)."""

    __slots__ = ("_target",)

    def __init__(self, target: Any):
        object.__setattr__(self, "_target", target)

    def _get_current_object(self) -> Any:
        return self._target()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._target(), name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._target(), name, value)

    def __bool__(self) -> bool:
        return bool(self._target())

    def __eq__(self, other: object) -> bool:
        return self._target() == other

    def __hash__(self) -> int:
        return hash(self._target())

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._target()(*args, **kwargs)

    def __repr__(self) -> str:
        return repr(self._target())


def _current_task() -> Any:
    from fastq.compat.app import _current_task as task

    return task()


current_app: Any = _Proxy(current.app)
current_task: Any = _Proxy(_current_task)

__all__ = ["AsyncResult", "Celery", "CeleryTask", "CompatWarning", "EagerResult", "GroupResult",
           "Signature", "Task", "celery_priority", "chain", "chord", "chunks", "crontab",
           "current_app", "current_task", "exceptions", "group", "maybe_signature",
           "resolve_priority", "schedule", "schedules", "shared_task", "signals", "signature",
           "solar", "states", "subtask", "xmap", "xstarmap"]
