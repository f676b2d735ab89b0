"""Global rate limits: token buckets in Redis, shared by every worker of every host.

A rate is given in Celery's format (``"100/s"``, ``"10/m"``, ``"5/h"``, or a number of tasks per
second) and turned into tokens per second by :func:`parse_rate`. :class:`RateLimiter` takes tokens
from a bucket with one Lua script (``lua/rate_acquire.lua``), so concurrent workers never over-grant,
and the bucket refills by the Redis server's clock (``TIME``), so they all share one clock whatever
their own clocks say.

Bucket keys come from :func:`fastq.keys.rate_task` and :func:`fastq.keys.rate_queue`. A bucket is a
hash ``{tokens, ts}`` with a PEXPIRE of (time to refill to full + 1 s): an idle bucket is full, and
a full bucket and no bucket behave the same, so idle ones simply vanish.
"""
from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fastq.broker.base import Control

_UNITS = {
    "s": 1.0, "sec": 1.0, "second": 1.0, "seconds": 1.0,
    "m": 60.0, "min": 60.0, "minute": 60.0, "minutes": 60.0,
    "h": 3600.0, "hr": 3600.0, "hour": 3600.0, "hours": 3600.0,
}
_RATE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(?:/\s*([A-Za-z]+))?\s*$")

DEFAULT_BURST_S = 0.1


def parse_rate(rate: str | float | int | None) -> float | None:
    """Tokens per second for a Celery-style rate, or None for "no limit".

    ``"100/s"``, ``"10/m"``, ``"5/h"`` (also ``sec``, ``min``, ``hour`` and plurals), ``"7.5"`` or
    ``7.5`` (per second). As in Celery, ``None`` and a rate of 0 mean no limit. Anything else
    (negative, not finite, unknown unit, malformed) raises ValueError.
    """
    if rate is None:
        return None
    if isinstance(rate, bool):
        raise ValueError(f"invalid rate limit {rate!r}: use e.g. '100/s', '10/m', '5/h' or a number "
                         "of tasks per second")
    if isinstance(rate, (int, float)):
        value = float(rate)
        per = 1.0
    elif isinstance(rate, str):
        match = _RATE.match(rate)
        if match is None:
            raise ValueError(f"invalid rate limit {rate!r}: use e.g. '100/s', '10/m', '5/h' or a "
                             "number of tasks per second")
        value = float(match.group(1))
        unit = (match.group(2) or "s").lower()
        if unit not in _UNITS:
            raise ValueError(f"invalid rate limit {rate!r}: unknown unit {match.group(2)!r}; use "
                             "s (per second), m (per minute) or h (per hour)")
        per = _UNITS[unit]
    else:
        raise ValueError(f"invalid rate limit {rate!r}: expected a string like '100/s' or a "
                         f"number, not {type(rate).__name__}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"invalid rate limit {rate!r}: must be a finite number >= 0")
    if value == 0:
        return None
    return value / per


def capacity(rate_per_s: float, burst_s: float = DEFAULT_BURST_S) -> float:
    """The bucket size: ``burst_s`` seconds worth of tokens, but always room for one."""
    return max(1.0, rate_per_s * burst_s)


def check_request(rate_per_s: float, n: int) -> None:
    """Refuse what no bucket can serve: a rate that is not a finite number > 0, or n < 1."""
    if not (rate_per_s > 0 and math.isfinite(rate_per_s)):
        raise ValueError(f"rate_per_s must be a finite number > 0 (or None), not {rate_per_s!r}")
    if n < 1:
        raise ValueError(f"n must be >= 1, not {n!r}")


class RateLimiter:
    """Token buckets kept by ``broker`` (any :class:`fastq.broker.base.Control`, e.g.
    ``app.broker``), shared by every worker using that broker.

    ``acquire(key, rate_per_s, n)`` takes up to ``n`` tokens and returns ``(granted, wait_ms)``:
    ``granted`` tokens were taken (0..n; fewer than ``n`` when the bucket runs dry), and ``wait_ms``
    is how long until the bucket holds one token again (0 if it still does), i.e. when it is worth
    asking again.
    """

    def __init__(self, broker: Control, burst_s: float = DEFAULT_BURST_S):
        if not (burst_s >= 0 and math.isfinite(burst_s)):
            raise ValueError(f"burst_s must be a finite number >= 0, not {burst_s!r}")
        self.broker = broker
        self.burst_s = burst_s

    def acquire(self, key: str, rate_per_s: float | None, n: int = 1, now_ms: int | None = None,
                burst_s: float | None = None) -> tuple[int, int]:
        """Take up to ``n`` tokens from the bucket ``key`` refilled at ``rate_per_s``.

        ``rate_per_s`` None means no limit: everything is granted without asking the broker.
        ``now_ms`` overrides the broker's clock (tests, or a caller with its own clock; don't
        mix the two on one bucket). ``burst_s`` overrides the limiter's default burst.
        """
        if rate_per_s is None:
            return n, 0
        check_request(rate_per_s, n)
        cap = capacity(rate_per_s, self.burst_s if burst_s is None else burst_s)
        return self.broker.take_tokens(key, rate_per_s, n, cap, now_ms)


__all__ = ["DEFAULT_BURST_S", "RateLimiter", "capacity", "parse_rate"]
