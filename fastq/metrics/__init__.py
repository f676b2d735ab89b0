"""Prometheus metrics (docs/metrics.md): ``fastq worker --metrics-port N``.

Children count what they run as it ends (in the Cython core's C counters) and write the counts
into prometheus-client's multiprocess files at most every 0.25 s while busy (``after_flush``)
and as they go idle (``child_idle``), never per task (:mod:`.recorder`). The
supervisor serves ``/metrics``: the children's files merged, plus what it reads at scrape time
(its own pool, and, on the one worker holding the ``metrics`` role, the queue-wide figures) from
:mod:`.collector`. Names and labels are celery-exporter's (``celery_task_*``,
``celery_queue_length`` ...), Flower's behind ``--flower-metrics``, and fastq's own
(``fastq_*``).

prometheus-client picks its multiprocess mode when it is first imported, so
:func:`fastq.metrics.server.prepare` runs before the app is loaded.
"""
from __future__ import annotations

from typing import Any

__all__ = ["TaskMetrics"]


def __getattr__(name: str) -> Any:  # imported on use: importing this package must not load
    if name == "TaskMetrics":       # prometheus_client (see above)
        from fastq.metrics.recorder import TaskMetrics

        return TaskMetrics
    raise AttributeError(name)
