"""The Celery-facing API: ``from fastq.compat import Celery`` instead of ``from celery import Celery``.

So far: the app class and Celery's integer priorities. Celery's Redis transport orders priorities
0 (highest) .. 9 (lowest); they map onto fastq's five levels two by two: 0-1 critical, 2-3 high,
4-5 normal, 6-7 low, 8-9 batch. Level names ("high", ...) work too.
"""
from __future__ import annotations

from typing import Any

from fastq.app import App
from fastq.task import Task, resolve_priority


def celery_priority(priority: int | str | None) -> int | str | None:
    """Map a Celery integer priority (0 highest .. 9 lowest) to a fastq level (0..4)."""
    if isinstance(priority, int) and not isinstance(priority, bool):
        if not 0 <= priority <= 9:
            raise ValueError(f"unknown priority {priority!r}: Celery priorities are 0 (highest) .. 9")
        return priority // 2
    return priority


class CeleryTask(Task):
    """A Task whose ``priority`` options take Celery's 0..9 integers."""

    def __init__(self, app: App, fn, name: str, *, priority: int | str | None = None, **options: Any):
        super().__init__(app, fn, name, priority=celery_priority(priority), **options)

    def apply_async(self, args=None, kwargs=None, *, priority: int | str | None = None,
                    **options: Any):
        return super().apply_async(args, kwargs, priority=celery_priority(priority), **options)


class Celery(App):
    """``Celery(main, broker=..., backend=...)`` with Celery's argument names."""

    task_class = CeleryTask

    def __init__(self, main: str | None = None, broker: str | None = None,
                 backend: str | None = None, **settings: Any):
        super().__init__(main or "celery", broker=broker, result_backend=backend, **settings)


__all__ = ["Celery", "CeleryTask", "celery_priority", "resolve_priority"]
