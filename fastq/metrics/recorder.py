"""What a worker child counts: per task into plain dicts, into the metric families per round.

A prometheus-client increment in multiprocess mode takes a lock and writes an mmap'd file (about
a microsecond); a fastq no-op task costs a few. So a task here only bumps dict entries and its
histogram bucket counts, and ``after_flush`` (once a round's outcomes are written) adds them to
the families, one increment per label set and bucket.
"""
from __future__ import annotations

import socket
import time
from bisect import bisect_left
from typing import TYPE_CHECKING, Any

from fastq import states
from fastq.errors import Ignore, Reject
from fastq.metrics import families
from fastq.middleware import Middleware, SkipMessage

if TYPE_CHECKING:
    from fastq.message import Message


REVOKED = "task-revoked"
SKIPPED = "skipped"  # a step skipped it without a state (no event of its own)
IGNORED = "ignored"  # the task raised Ignore: started, no outcome event


class _Observations:
    """Histogram observations not yet written: per label set, the sum and per-bucket counts."""

    def __init__(self, bounds: tuple[float, ...]):
        self.bounds = bounds
        self.pending: dict[tuple, list] = {}

    def add(self, labels: tuple, value: float) -> None:
        entry = self.pending.get(labels)
        if entry is None:
            entry = self.pending[labels] = [0.0, [0] * len(self.bounds)]
        entry[0] += value
        entry[1][bisect_left(self.bounds, value)] += 1

    def regrouped(self, relabel: Any) -> _Observations:
        """The same observations under other labels (several label sets may merge into one)."""
        out = _Observations(self.bounds)
        for labels, (total, counts) in self.pending.items():
            entry = out.pending.setdefault(relabel(*labels), [0.0, [0] * len(self.bounds)])
            entry[0] += total
            entry[1] = [a + b for a, b in zip(entry[1], counts, strict=True)]
        return out

    def write(self, histogram: Any) -> None:
        # Histogram.observe, for many observations at once: its per-bucket (not cumulative)
        # values and its sum, as prometheus-client keeps them
        for labels, (total, counts) in self.pending.items():
            child = histogram.labels(*labels)
            child._sum.inc(total)
            for i, n in enumerate(counts):
                if n:
                    child._buckets[i].inc(n)
        self.pending.clear()


class TaskMetrics(Middleware):
    """Counts each task's events (celery-exporter's names) and times it; installed by
    ``fastq worker --metrics-port``. ``flower=True`` also records Flower's names."""

    def __init__(self, flower: bool = False, hostname: str = ""):
        self.flower = flower
        # the worker's name in a child (from its consumer name); a producer's host elsewhere
        self.hostname = hostname or socket.gethostname()
        self._families: families.Families | None = None
        self._counts: dict[tuple, int] = {}  # (name, queue, outcome, exception) -> n
        self._seen: set[tuple[str, str]] = set()  # (name, queue) with every counter shown
        self._runtime = _Observations(tuple(families.BUCKETS))
        self._wait = _Observations(families.WAIT_BUCKETS)
        self._latency = _Observations(families.WAIT_BUCKETS)
        self._started: dict[str, tuple[float, float]] = {}  # task id -> (start, enqueued at)
        self._retrying: str | None = None
        self._child: Any = None
        self._engine_written: dict[str, int] = {}  # Child.engine_counts already written

    @property
    def families(self) -> families.Families:
        if self._families is None:
            self._families = families.create(self.flower)
        return self._families

    # -- hooks ------------------------------------------------------------------------------
    def child_init(self, child: Any) -> None:
        self._child = child
        self.hostname = child.consumer.rsplit(":", 1)[0]

    def after_send(self, app: Any, message: Message) -> None:
        """Counted at once: a producer may have no rounds to flush in."""
        self.families.counters["task-sent"].labels(message.task, self.hostname,
                                                   message.queue).inc()

    def before_execute(self, task: Any, message: Message) -> None:
        now = time.time()
        entry = self._child.current_entry if self._child is not None else None
        self._started[message.id] = (now, int(entry.split(b"-", 1)[0]) / 1000.0 if entry else 0.0)

    def on_retry(self, task: Any, message: Message, exc: BaseException, countdown: float) -> None:
        self._retrying = message.id

    def after_execute(self, task: Any, message: Message, result: Any = None,
                      exc: BaseException | None = None) -> None:
        name, queue = message.task, message.queue
        started, enqueued = self._started.pop(message.id, (0.0, 0.0))
        if exc is None:
            outcome, exception = "task-succeeded", ""
        elif isinstance(exc, SkipMessage):  # a step said no: it never started
            outcome, exception = (REVOKED if exc.state == states.REVOKED else SKIPPED), ""
        elif self._retrying == message.id:
            self._retrying = None
            outcome, exception = "task-retried", ""
        elif isinstance(exc, Reject):
            outcome, exception = "task-rejected", ""
        elif isinstance(exc, Ignore):
            outcome, exception = IGNORED, ""
        else:
            outcome, exception = "task-failed", type(exc).__name__
        key = (name, queue, outcome, exception)
        counts = self._counts
        counts[key] = counts.get(key, 0) + 1
        if started:
            now = time.time()
            if exc is None:
                self._runtime.add((name, self.hostname, queue), now - started)
            if enqueued:
                self._wait.add((name, queue), max(started - enqueued, 0.0))
                self._latency.add((name, queue), max(now - enqueued, 0.0))

    def after_flush(self, child: Any, finish: Any) -> None:
        self.flush()

    def child_shutdown(self, child: Any) -> None:
        self.flush()

    # -- writing ----------------------------------------------------------------------------
    def _write_engine(self, counts: dict[str, int]) -> None:
        written = self._engine_written
        for key, value in counts.items():
            delta = value - written.get(key, 0)
            if delta or key not in written:
                self.families.engine[key].labels(self.hostname).inc(delta)
                written[key] = value

    def flush(self) -> None:
        """Write what was counted since the last flush into the families."""
        if self._child is not None:
            self._write_engine(self._child.engine_counts)
        if not (self._counts or self._runtime.pending or self._wait.pending):
            return
        fam, host = self.families, self.hostname
        events: dict[tuple, int] = {}  # (event, name, queue, exception) -> n
        for (name, queue, outcome, exception), n in self._counts.items():
            for event in (("task-received",) if outcome in (REVOKED, SKIPPED) else
                          ("task-received", "task-started")):
                events[(event, name, queue, "")] = events.get((event, name, queue, ""), 0) + n
            if outcome not in (SKIPPED, IGNORED):
                events[(outcome, name, queue, exception)] = n + events.get(
                    (outcome, name, queue, exception), 0)
        for (event, name, queue, exception), n in events.items():
            if (name, queue) not in self._seen:  # every counter shown from the first event on,
                self._seen.add((name, queue))  # so that rate() and ratios work at once
                for other, counter in fam.counters.items():
                    if other not in ("task-failed", "task-sent"):
                        counter.labels(name, host, queue)
            if event == "task-failed":
                fam.counters[event].labels(name, host, queue, exception).inc(n)
            else:
                fam.counters[event].labels(name, host, queue).inc(n)
            if fam.flower_events is not None:
                fam.flower_events.labels(host, event, name).inc(n)
        self._counts.clear()
        if fam.flower_runtime is not None:
            self._runtime.regrouped(lambda name, host, _queue: (host, name)).write(
                fam.flower_runtime)
        self._runtime.write(fam.runtime)
        self._wait.write(fam.wait)
        self._latency.write(fam.latency)
