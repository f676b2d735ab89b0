"""What a worker child counts: each run as it ends, into the metric families a few times a second.

A prometheus-client increment in multiprocess mode takes a lock and writes an mmap'd file (about
a microsecond); a fastq no-op task costs a few. So a successful run is counted, timed and
bucketed as it ends by the Cython core (``fastq._core.RunTally``, whose ``after_execute`` is the
hook itself: no Python frame), in C counters per task name and queue; the counts reach the
families, one increment per label set and bucket, at most every ``WRITE_EVERY_S`` while the
child is busy (after a round's outcomes are written) and whenever it is about to wait for work
(``child_idle``), so a scrape of an idle worker sees every run. Other outcomes (rare on a hot
path) are counted as they happen. A child killed outright loses what it had not written (at
most ``WRITE_EVERY_S``).
"""
from __future__ import annotations

import socket
import time
from typing import TYPE_CHECKING, Any

from fastq._core import RunTally, decode_message
from fastq.metrics import families
from fastq.middleware import IGNORED, SKIPPED, Middleware, run_event

if TYPE_CHECKING:
    from fastq.message import Message


REVOKED = "task-revoked"
# a busy child's counts reach the families at most this often (each write takes a lock and
# touches an mmap'd file per label set and bucket: several times a no-op task's run)
WRITE_EVERY_S = 0.25


class _Observations:
    """Histogram observations not yet written: per label set, the sum and per-bucket counts."""

    def __init__(self, bounds: tuple[float, ...]):
        self.bounds = bounds
        self.pending: dict[tuple, list] = {}

    def merge(self, labels: tuple, total: float, counts: list[int]) -> None:
        if not any(counts):
            return
        entry = self.pending.get(labels)
        if entry is None:
            self.pending[labels] = [total, list(counts)]
            return
        entry[0] += total
        entry[1] = [a + b for a, b in zip(entry[1], counts, strict=True)]

    def regrouped(self, relabel: Any) -> _Observations:
        """The same observations under other labels (several label sets may merge into one)."""
        out = _Observations(self.bounds)
        for labels, (total, counts) in self.pending.items():
            out.merge(relabel(*labels), total, counts)
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
        self._runtime = _Observations(tuple(float(b) for b in families.BUCKETS))
        self._wait = _Observations(families.WAIT_BUCKETS)
        self._latency = _Observations(families.WAIT_BUCKETS)
        # successes not yet written, counted and timed as they end (fastq/_core/tally.pyx). Its
        # after_execute is the hook itself: a success costs no Python frame; other runs come
        # to _other_run
        self._tally = RunTally(self._runtime.bounds, self._wait.bounds, None, self._other_run,
                               prefetch=flower)
        self._prefetched: dict[str, int] = {}  # task name -> read, not started (as written)
        self.after_execute = self._tally.after_execute  # type: ignore[method-assign]
        self._retrying: str | None = None
        self._engine_written: dict[str, int] = {}  # Child.engine_counts already written
        self._next_write = 0.0  # time.monotonic() from which after_flush writes again

    @property
    def families(self) -> families.Families:
        if self._families is None:
            self._families = families.create(self.flower)
        return self._families

    # -- hooks ------------------------------------------------------------------------------
    def child_init(self, child: Any) -> None:
        self._tally.child = child
        self._tally.offset = time.time() - time.monotonic()
        self.hostname = child.consumer.rsplit(":", 1)[0]

    def after_send(self, app: Any, message: Message) -> None:
        """Counted at once: a producer may have no rounds to flush in."""
        self.families.counters["task-sent"].labels(message.task, self.hostname,
                                                   message.queue).inc()

    def on_retry(self, task: Any, message: Message, exc: BaseException, countdown: float) -> None:
        self._retrying = message.id

    def after_execute(self, task: Any, message: Message, result: Any = None,
                      exc: BaseException | None = None) -> None:
        """Counted as it ends. (An instance's hook is its tally's.)"""
        self._tally.after_execute(task, message, result, exc)

    def _other_run(self, task: Any, message: Message, result: Any,
                   exc: BaseException | None) -> None:
        """A run that raised, counted by its event type (or a success outside a worker:
        counted, not timed)."""
        if exc is None:
            self._tally.add(message.task, message.queue, 0.0, 0.0, None)
            return
        retried = self._retrying == message.id
        if retried:
            self._retrying = None
        outcome = run_event(exc, retried)
        exception = type(exc).__name__ if outcome == "task-failed" else ""
        key = (message.task, message.queue, outcome, exception)
        self._counts[key] = self._counts.get(key, 0) + 1

    def after_flush(self, child: Any, finish: Any) -> None:
        """The families are written at most every ``WRITE_EVERY_S`` while the child is busy,
        and as it goes idle."""
        now = time.monotonic()
        if now >= self._next_write:
            self._next_write = now + WRITE_EVERY_S
            self.flush()

    def child_idle(self, child: Any) -> None:
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

    def _count_successes(self) -> None:
        """The successes tallied since the last write (fastq/_core/tally.pyx); a run's epoch
        start is its monotonic start moved by the clocks' offset, taken again at each write."""
        stats = self._tally.take()
        self._tally.offset = time.time() - time.monotonic()
        counts, host = self._counts, self.hostname
        prefetch_time = self.families.flower_prefetch_time
        for (name, queue), (n, run_sum, runs, wait_sum, waits, lat_sum, lats,
                            prefetch) in stats.items():
            key = (name, queue, "task-succeeded", "")
            counts[key] = counts.get(key, 0) + n
            self._runtime.merge((name, host, queue), run_sum, runs)
            self._wait.merge((name, queue), wait_sum, waits)
            self._latency.merge((name, queue), lat_sum, lats)
            if prefetch is not None and prefetch_time is not None:
                prefetch_time.labels(host, name).set(prefetch)

    def _write_prefetched(self, child: Any) -> None:
        """Flower's prefetched tasks: this child's batch not started yet, by task name (an
        envelope nobody can read is not counted)."""
        now: dict[str, int] = {}
        for delivery in child.waiting():
            try:
                name = decode_message(delivery[3]).task
            except Exception:  # noqa: BLE001 - it goes to the DLQ when its turn comes
                continue
            now[name] = now.get(name, 0) + 1
        gauge = self.families.flower_prefetched
        for name in now.keys() | self._prefetched.keys():
            if now.get(name, 0) != self._prefetched.get(name, 0):
                gauge.labels(self.hostname, name).set(now.get(name, 0))
        self._prefetched = now

    def flush(self) -> None:
        """Write what was counted since the last flush into the families."""
        child = self._tally.child
        if child is not None:
            self._write_engine(child.engine_counts)
            if self.flower:
                self._write_prefetched(child)
        if len(self._tally):
            self._count_successes()
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
