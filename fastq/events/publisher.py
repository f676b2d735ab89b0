"""Publishing events: a child's task events once per round, the supervisor's worker events on
a timer of their own."""
from __future__ import annotations

import os
import platform
import threading
import time
from typing import Any

import msgpack
import orjson
import structlog

from fastq import __version__
from fastq._core import RunLog
from fastq.events import records, wire
from fastq.middleware import IGNORED, SKIPPED, Middleware, run_event
from fastq.worker import health

log = structlog.get_logger("fastq.events")
LISTEN_CHECK_S = 2.0  # with nobody on Celery's channel, how often a round tries it again
BACKLOG_MAX = 10_000  # events kept for the next round while Redis refuses them
HEARTBEAT_S = 2.0  # Celery's worker heartbeat frequency (Flower expects about this)


class Events:
    """A process's outgoing events (the supervisor's worker events), published in batches:
    JSON on fastq's stream, and in Celery's format on Celery's channel."""

    def __init__(self, app: Any, hostname: str):
        self.app = app
        self.hostname = hostname
        self.clock = wire.Clock()
        self.pid = os.getpid()
        self.utcoffset = wire.utcoffset()
        self.pending: list[dict[str, Any]] = []

    def add(self, kind: str, timestamp: float | None = None, **fields: Any) -> None:
        self.pending.append({"hostname": self.hostname, "utcoffset": self.utcoffset,
                             "pid": self.pid, "clock": self.clock.tick(), **fields,
                             "timestamp": timestamp or time.time(), "type": kind})

    def publish(self, broker: Any, group: str = "worker") -> None:
        if not self.pending:
            return
        batch = self.pending
        try:
            broker.publish_events(
                {"e": orjson.dumps(batch, default=repr)}, self.app.settings.events_maxlen,
                wire.envelope(batch, wire.EVENT_EXCHANGE, f"{group}.multi",
                              {"hostname": self.hostname}), f"{group}.multi")
        except Exception as exc:  # noqa: BLE001 - kept for the next try, never fatal
            if len(batch) > BACKLOG_MAX:
                log.warning("events dropped: Redis refuses them", error=str(exc),
                            count=len(batch) - BACKLOG_MAX)
                del batch[:len(batch) - BACKLOG_MAX]
            return
        self.pending = []
        self.utcoffset = wire.utcoffset()


class TaskEvents(Middleware):
    """A child's task events (Celery's types and fields). A run is packed as it ends.
    The round's runs go, compact (fastq/events/records.py), into the transaction that writes
    their outcomes (``before_flush``: ``Finish.events``), so the stream tells of exactly the
    outcomes written. Celery's format (every event a dict, JSON in a kombu envelope) costs
    several times the run itself, so it is built only while someone listens on Celery's
    channel: a publish learns how many did, and with none the next try is ``LISTEN_CHECK_S``
    later (Flower, subscribing then, sees events from then on, as with Celery's pub/sub)."""

    def __init__(self, app: Any):
        self.app = app
        self._broker: Any = None
        self._hostname = ""
        self._pid = 0
        self._clock = 0
        # this round's runs, packed as they end (fastq/_core/runlog.pyx). Its after_execute is
        # the hook itself: a success costs no Python frame; runs that raised come to _other_run
        self._runs = RunLog(None, self._other_run, records.REPR_MAX)
        self.after_execute = self._runs.after_execute  # type: ignore[method-assign]
        # (first clock, monotonic to epoch, packed runs) now in Finishes
        self._written: list[tuple[int, float, bytes]] = []
        self._to_epoch = time.time() - time.monotonic()
        self._utcoffset = wire.utcoffset()
        self._retrying: str | None = None
        self._listened = True  # someone took the last Celery message (assumed at first)
        self._next_try = 0.0
        self._accept_pickle = "pickle" in app.settings.accept_content

    def child_init(self, child: Any) -> None:
        self._broker = child.broker
        self._hostname = child.consumer.rsplit(":", 1)[0]
        self._pid = os.getpid()
        self._runs.child = child

    def on_retry(self, task: Any, message: Any, exc: BaseException, countdown: float) -> None:
        self._retrying = message.id

    def after_execute(self, task: Any, message: Any, result: Any = None,
                      exc: BaseException | None = None) -> None:
        """The run, compact (fastq/events/records.py). (An instance's hook is its run log's.)"""
        self._runs.after_execute(task, message, result, exc)

    def _other_run(self, task: Any, message: Any, result: Any,
                   exc: BaseException | None) -> None:
        """A run that raised: its outcome, and what that outcome's event says."""
        child = self._runs.child
        if child is None:  # run outside a worker (eager): no worker, no events
            return
        started = child.task_started
        retried = self._retrying == message.id
        if retried:
            self._retrying = None
        outcome: str | None = run_event(exc, retried)
        if outcome in ("task-revoked", SKIPPED):  # every skip is told as revoked
            outcome, started = "task-revoked", 0.0
        elif outcome == IGNORED:  # no outcome event (records.expand)
            outcome = None
        self._runs.add(child.current_data, message.queue, outcome, started, time.monotonic(),
                       records.detail(outcome, exc, result))

    def before_flush(self, child: Any, finish: Any) -> None:
        count = len(self._runs)
        if not count:
            return
        runs = self._runs.take()
        finish.events.append(({"h": self._hostname, "p": self._pid, "o": self._utcoffset,
                               "c": self._clock, "t": self._to_epoch, "r": runs},
                              max(10, self.app.settings.events_maxlen // count)))
        self._written.append((self._clock, self._to_epoch, runs))
        self._clock += 3 * count  # clocks only need to grow: three a run

    def after_flush(self, child: Any, finish: Any) -> None:
        self._to_epoch = time.time() - time.monotonic()
        if not self._written:
            return
        written, self._written = self._written, []
        now = time.monotonic()
        if not (self._listened or now >= self._next_try):
            return
        batch = [e for clock, to_epoch, runs in written for e in records.expand(
            msgpack.unpackb(runs), self._hostname, self._pid, self._utcoffset, clock, to_epoch,
            self._accept_pickle)]
        try:
            listeners = self._broker.publish_events(
                None, 0, wire.envelope(batch, wire.EVENT_EXCHANGE, "task.multi",
                                       {"hostname": self._hostname}), "task.multi")
        except Exception as exc:  # noqa: BLE001 - pub/sub: nobody is owed a missed message
            log.warning("could not publish Celery events", error=str(exc))
            return
        self._listened, self._next_try = listeners > 0, now + LISTEN_CHECK_S
        self._utcoffset = wire.utcoffset()  # once a round: it changes with daylight saving

    def child_shutdown(self, child: Any) -> None:
        self.after_flush(child, None)


class WorkerEvents(Middleware):
    """The supervisor's worker-online, worker-heartbeat (every 2 s, with the active count) and
    worker-offline events, from a thread of its own with a connection of its own; and the
    answers to Celery's remote-control broadcasts (fastq/events/mailbox.py)."""

    def __init__(self, app: Any):
        self.app = app
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._mailbox: Any = None

    def worker_boot(self, worker: Any) -> None:
        from fastq.events.mailbox import CeleryMailbox

        self._thread = threading.Thread(target=self._run, args=(worker,), daemon=True,
                                        name="fastq-worker-events")
        self._thread.start()
        self._mailbox = CeleryMailbox(worker)
        self._mailbox.start()

    def worker_shutdown(self, worker: Any) -> None:
        self._stop.set()
        if self._mailbox is not None:
            self._mailbox.stop()
        if self._thread is not None:
            self._thread.join(5)

    def _run(self, worker: Any) -> None:
        broker = self.app.broker.with_timeout(5.0)
        events = Events(self.app, worker.name)
        events.add("worker-online", **self._fields(worker, broker))
        while True:
            events.publish(broker, "worker")
            if self._stop.wait(HEARTBEAT_S):
                break
            events.add("worker-heartbeat", **self._fields(worker, broker))
        events.add("worker-offline", **self._fields(worker, broker))
        events.publish(broker, "worker")

    @staticmethod
    def _fields(worker: Any, broker: Any) -> dict[str, Any]:
        try:
            processed = health.pool_totals(broker, worker.consumers())["processed"]
        except Exception:  # noqa: BLE001 - Redis down: the count is unknown this time
            processed = 0
        return {"freq": HEARTBEAT_S, "sw_ident": "fastq", "sw_ver": __version__,
                "sw_sys": platform.system(), "active": worker.busy_children(),
                "processed": processed,
                "loadavg": [round(x, 2) for x in os.getloadavg()]}
