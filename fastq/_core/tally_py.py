"""Counting and timing a round's successful runs for the metrics (fastq/metrics/recorder.py):
the pure twin of ``tally.pyx``, giving the same results.

``runs`` holds ``(message, started, ended, entry id)``: ``started`` and ``ended`` are
``time.monotonic()`` (``started`` 0: not timed), ``entry id`` the stream entry (``b"<ms>-<n>"``,
None: none). ``offset`` turns a monotonic time into epoch seconds. ``stats`` maps
``(task name, queue)`` to ``[count, run sum, run buckets, wait sum, wait buckets, latency sum,
latency buckets]`` (bucket lists as long as their bounds; a value goes to the first bound it does
not exceed), created on first use and added to.
"""
from __future__ import annotations

from bisect import bisect_left


def new_stats(run_bounds: tuple[float, ...], wait_bounds: tuple[float, ...]) -> list:
    return [0, 0.0, [0] * len(run_bounds), 0.0, [0] * len(wait_bounds), 0.0,
            [0] * len(wait_bounds)]


def tally_runs(runs: list, offset: float, run_bounds: tuple[float, ...],
               wait_bounds: tuple[float, ...], stats: dict) -> None:
    for msg, started, ended, entry in runs:
        key = (msg.task, msg.queue)
        st = stats.get(key)
        if st is None:
            st = stats[key] = new_stats(run_bounds, wait_bounds)
        st[0] += 1
        if not started:
            continue
        runtime = ended - started
        st[1] += runtime
        st[2][bisect_left(run_bounds, runtime)] += 1
        if entry:
            enqueued = int(entry.split(b"-", 1)[0]) / 1000.0
            wait = max(started + offset - enqueued, 0.0)
            latency = max(ended + offset - enqueued, 0.0)
            st[3] += wait
            st[4][bisect_left(wait_bounds, wait)] += 1
            st[5] += latency
            st[6][bisect_left(wait_bounds, latency)] += 1
