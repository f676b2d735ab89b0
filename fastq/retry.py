"""Retry policies: which failures are retried, and after how long.

Retries never sleep in a worker: the next attempt is written to the queue's delayed set and comes
back when due. Celery's option names are accepted (autoretry_for, dont_autoretry_for, default_retry_delay,
retry_backoff, retry_backoff_max, retry_jitter).
"""
from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from fastq.errors import FastqError


class Retry(FastqError):  # noqa: N818 - Celery's name
    """Raised by ``self.retry()`` in a bound task: run this task again later."""

    def __init__(self, exc: BaseException | None = None, countdown: float | None = None,
                 max_retries: int | None = None):
        super().__init__(f"retry requested: {exc!r}" if exc else "retry requested")
        self.exc = exc
        self.countdown = countdown
        self.max_retries = max_retries


class MaxRetriesExceededError(FastqError):
    """``self.retry()`` was called after the last allowed attempt."""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """``max_retries`` retries (attempts = 1 + max_retries) for exceptions in ``retry_for``.

    The delay before retry number n (0-based): ``schedule[n]`` (last value repeats) if a schedule
    is given; else with ``backoff`` = factor: ``min(factor * 2**n, backoff_max)``, drawn uniformly
    from [0, that] when ``jitter`` (full jitter); else the fixed ``delay``.
    """

    max_retries: int = 3
    retry_for: tuple[type[BaseException], ...] = ()
    delay: float = 180.0
    backoff: float = 0.0
    backoff_max: float = 600.0
    jitter: bool = True
    schedule: tuple[float, ...] = ()
    dont_retry_for: tuple[type[BaseException], ...] = ()  # never retried, even if in retry_for

    def delay_for(self, retries_done: int, rng: Callable[[], float] = random.random) -> float:
        if self.schedule:
            return float(self.schedule[min(retries_done, len(self.schedule) - 1)])
        if self.backoff:
            ceiling = min(self.backoff * (2 ** retries_done), self.backoff_max)
            return rng() * ceiling if self.jitter else ceiling
        return self.delay

    def retries_automatically(self, exc: BaseException) -> bool:
        return bool(self.retry_for) and isinstance(exc, self.retry_for) \
            and not isinstance(exc, self.dont_retry_for)

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> RetryPolicy:
        """Build from task options (removing the ones it uses from ``options``)."""
        retry_for = options.pop("retry_for", None) or options.pop("autoretry_for", None) or ()
        backoff = options.pop("retry_backoff", 0)
        schedule: Sequence[float] = options.pop("retry_schedule", None) or ()
        dont = options.pop("dont_retry_for", None) or options.pop("dont_autoretry_for", None) or ()
        return cls(
            max_retries=int(options.pop("max_retries", 3)),
            retry_for=tuple(retry_for),
            delay=seconds("default_retry_delay",
                          options.pop("default_retry_delay", options.pop("retry_delay", 180.0))),
            backoff=1.0 if backoff is True else seconds("retry_backoff", backoff or 0),
            backoff_max=seconds("retry_backoff_max", options.pop("retry_backoff_max", 600.0)),
            jitter=bool(options.pop("retry_jitter", True)),
            schedule=tuple(seconds("retry_schedule delays", d) for d in schedule),
            dont_retry_for=tuple(dont),
        )


def seconds(name: str, value: float) -> float:
    """A delay option as float seconds: a negative, NaN or infinite one is a clear error here,
    not a crash in the worker that computes a due time from it."""
    value = float(value)
    if not value >= 0 or math.isinf(value):
        raise ValueError(f"{name} must be >= 0 (a finite number of seconds), not {value}")
    return value
