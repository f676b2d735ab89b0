"""Counting and timing successful runs for the metrics (fastq/metrics/recorder.py), as they end:
the pure twin of ``tally.pyx``, giving the same results.

``add(name, queue, started, ended, entry)`` counts one run of task ``name`` from ``queue``:
``started`` and ``ended`` are ``time.monotonic()`` (``started`` 0: not timed), ``entry`` its
stream entry id (``b"<ms>-<n>"``; None: none), from which its wait (enqueue to start) and latency
(enqueue to end) are measured, ``offset`` turning a monotonic time into epoch seconds; and, given
``read_at`` (when its batch was read, monotonic), its prefetch time (read to start).
``after_execute`` is the middleware hook itself: a success is added here (the child's start
and entry, ``time.monotonic()`` as its end), without a Python frame in the Cython twin; any other
run goes to ``other(task, message, result, exc)``; with ``prefetch``, it passes the child's
``batch_read_at``. ``take()`` returns what was added since the last take, ``{(name, queue):
[count, run sum, run buckets, wait sum, wait buckets, latency sum, latency buckets, the last
prefetch time or None]}`` (bucket lists as long as their bounds; a value goes to the first bound
it does not exceed), and starts again.
"""
from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Callable
from typing import Any


class RunTally:
    def __init__(self, run_bounds: tuple[float, ...], wait_bounds: tuple[float, ...],
                 child: Any = None, other: Callable[..., None] | None = None,
                 prefetch: bool = False):
        self.run_bounds, self.wait_bounds = tuple(run_bounds), tuple(wait_bounds)
        self.child, self.other, self.prefetch = child, other, prefetch
        self.offset = 0.0
        self._stats: dict[tuple[str, str], list] = {}
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def add(self, name: str, queue: str, started: float, ended: float,
            entry: bytes | None, read_at: float = 0.0) -> None:
        st = self._stats.get((name, queue))
        if st is None:
            st = self._stats[name, queue] = [0, 0.0, [0] * len(self.run_bounds), 0.0,
                                             [0] * len(self.wait_bounds), 0.0,
                                             [0] * len(self.wait_bounds), None]
        self._count += 1
        st[0] += 1
        if not started:
            return
        if read_at:
            st[7] = started - read_at if started > read_at else 0.0
        runtime = ended - started
        st[1] += runtime
        st[2][bisect_left(self.run_bounds, runtime)] += 1
        if entry:
            enqueued = int(entry.split(b"-", 1)[0]) / 1000.0
            wait = max(started + self.offset - enqueued, 0.0)
            latency = max(ended + self.offset - enqueued, 0.0)
            st[3] += wait
            st[4][bisect_left(self.wait_bounds, wait)] += 1
            st[5] += latency
            st[6][bisect_left(self.wait_bounds, latency)] += 1

    def after_execute(self, task: Any, message: Any, result: Any = None,
                      exc: BaseException | None = None) -> None:
        child = self.child
        if exc is not None or child is None:
            if self.other is not None:
                self.other(task, message, result, exc)
            return
        self.add(message.task, message.queue, child.task_started, time.monotonic(),
                 child.current_entry, child.batch_read_at if self.prefetch else 0.0)

    def take(self) -> dict[tuple[str, str], list]:
        stats, self._stats, self._count = self._stats, {}, 0
        return stats
