"""Publishing events: a child's task events once per round, the supervisor's worker events on
a timer of their own."""
from __future__ import annotations

import os
import platform
import threading
import time
import traceback
from datetime import UTC, datetime
from typing import Any

import msgpack
import structlog

from fastq import __version__
from fastq._core import unpack_body
from fastq.errors import Ignore, Reject
from fastq.events import wire
from fastq.middleware import Middleware, SkipMessage

log = structlog.get_logger("fastq.events")
REPR_MAX = 1024  # as Celery's argsrepr / resultrepr
BACKLOG_MAX = 10_000  # events kept for the next round while Redis refuses them
HEARTBEAT_S = 2.0  # Celery's worker heartbeat frequency (Flower expects about this)


def _iso(ms: int) -> str | None:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat() if ms else None


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= REPR_MAX else text[:REPR_MAX - 3] + "..."


class Events:
    """A process's outgoing events, published in batches."""

    def __init__(self, app: Any, hostname: str):
        self.app = app
        self.hostname = hostname
        self.clock = wire.Clock()
        self.pending: list[dict[str, Any]] = []

    def add(self, kind: str, timestamp: float | None = None, **fields: Any) -> None:
        self.pending.append(wire.event(kind, self.hostname, self.clock, timestamp, **fields))

    def publish(self, broker: Any, group: str = "task") -> None:
        if not self.pending:
            return
        batch = self.pending
        try:
            broker.publish_events(msgpack.packb(batch, default=repr),
                                  self.app.settings.events_maxlen,
                                  wire.envelope(batch, wire.EVENT_EXCHANGE, f"{group}.multi",
                                                {"hostname": self.hostname}),
                                  f"{group}.multi")
        except Exception as exc:  # noqa: BLE001 - kept for the next round, never fatal
            if len(batch) > BACKLOG_MAX:
                log.warning("events dropped: Redis refuses them", count=len(batch) - BACKLOG_MAX,
                            error=str(exc))
                del batch[:len(batch) - BACKLOG_MAX]
            return
        self.pending = []


class TaskEvents(Middleware):
    """A child's task events (Celery's types and fields), published after each round."""

    def __init__(self, app: Any):
        self.app = app
        self.events: Events | None = None
        self._broker: Any = None
        self._started: dict[str, float] = {}
        self._retrying: str | None = None
        self._accept_pickle = "pickle" in app.settings.accept_content

    def child_init(self, child: Any) -> None:
        self.events = Events(self.app, child.consumer.rsplit(":", 1)[0])
        self._broker = child.broker

    def before_execute(self, task: Any, message: Any) -> None:
        self._started[message.id] = time.time()

    def on_retry(self, task: Any, message: Any, exc: BaseException, countdown: float) -> None:
        self._retrying = message.id

    def after_execute(self, task: Any, message: Any, result: Any = None,
                      exc: BaseException | None = None) -> None:
        events = self.events
        if events is None:
            return
        now = time.time()
        started = self._started.pop(message.id, now)
        try:
            args, kwargs = unpack_body(message.body, message.codec, message.compressed,
                                       self._accept_pickle)
        except Exception:  # noqa: BLE001 - shown as unknown
            args, kwargs = "?", "?"
        uuid = message.id
        events.add("task-received", started, uuid=uuid, name=message.task, args=_short(args),
                   kwargs=_short(kwargs), root_id=message.root_id or uuid,
                   parent_id=message.parent_id, retries=message.attempt,
                   eta=_iso(message.eta_ms), expires=_iso(message.expires_ms),
                   routing_key=message.queue, queue=message.queue)
        if isinstance(exc, SkipMessage):
            events.add("task-revoked", now, uuid=uuid, terminated=False, signum=None,
                       expired=exc.reason == "expired")
            return
        events.add("task-started", started, uuid=uuid)
        if exc is None:
            events.add("task-succeeded", now, uuid=uuid, result=_short(result),
                       runtime=now - started)
        elif self._retrying == uuid:
            self._retrying = None
            events.add("task-retried", now, uuid=uuid, exception=_short(exc),
                       traceback=_traceback(exc))
        elif isinstance(exc, Reject):
            events.add("task-rejected", now, uuid=uuid, requeue=False)
        elif not isinstance(exc, Ignore):
            events.add("task-failed", now, uuid=uuid, exception=_short(exc),
                       traceback=_traceback(exc))

    def after_flush(self, child: Any, finish: Any) -> None:
        if self.events is not None:
            self.events.publish(self._broker)

    def child_shutdown(self, child: Any) -> None:
        self.after_flush(child, None)


def _traceback(exc: BaseException) -> str:
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))


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
        busy = sum(worker.slots.read(slot).busy for slot in list(worker.children.values()))
        processed = 0
        try:
            mine = {worker.consumer(slot) for slot in list(worker.children.values())}
            for raw in broker.workers():
                beat = msgpack.unpackb(raw)
                if beat.get("consumer") in mine:
                    processed += beat.get("processed", 0)
        except Exception:  # noqa: BLE001 - Redis down: the count is unknown this time
            pass
        return {"freq": HEARTBEAT_S, "sw_ident": "fastq", "sw_ver": __version__,
                "sw_sys": platform.system(), "active": busy, "processed": processed,
                "loadavg": [round(x, 2) for x in os.getloadavg()]}
