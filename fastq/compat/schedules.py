"""``celery.schedules``: ``crontab`` and ``schedule`` (fastq's own); ``solar`` is not supported."""
from typing import Any

from fastq.schedules import BaseSchedule, crontab, schedule


class solar(BaseSchedule):  # noqa: N801 - Celery's name
    """Celery's sunrise/sunset schedule: not supported by fastq (use a crontab per season, or
    compute the times in a task that sends the work with ``eta``)."""

    def __init__(self, *args: Any, **kwargs: Any):
        raise NotImplementedError("fastq does not support solar schedules; use crontab, or a task "
                                  "that computes the event times and sends the work with eta=")


__all__ = ["BaseSchedule", "crontab", "schedule", "solar"]
