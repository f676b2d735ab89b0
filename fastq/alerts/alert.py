"""What an alert is: a kind, a one-line summary, details, the worker that saw it, and when."""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

TASK_FAILED = "task_failed"
DLQ_GROWTH = "dlq_growth"
QUEUE_AGE = "queue_age"
WORKER_LOST = "worker_lost"
KINDS = (TASK_FAILED, DLQ_GROWTH, QUEUE_AGE, WORKER_LOST)


@dataclass(slots=True)
class Alert:
    """One alert. ``payload()`` is the JSON body a webhook receives (docs/alerts.md)."""

    kind: str  # one of KINDS
    summary: str
    details: dict[str, Any]
    worker: str  # the worker (or child, worker:slot) that raised it
    time: float = field(default_factory=time.time)  # epoch seconds

    def payload(self) -> dict[str, Any]:
        return asdict(self)
