"""Delivery of alerts: one daemon thread per process calls the callbacks and POSTs the webhooks,
so neither a task nor the supervisor's loop ever waits for a receiver.

``send`` only puts the alert on a bounded in-memory queue (it never blocks: when the queue is
full the alert is dropped and logged). The thread starts on first use in the process that uses
it, and a process forked from one that had it starts its own. A webhook gets ``alert_timeout_s``
per request and ``alert_retries`` more attempts after a failure, waiting 0.5 s, 1 s, 2 s ... (at
most 30 s) between them. ``sources`` are polled by the thread every ``alert_check_s`` for alerts
gathered in between (a child's aggregated task failures, fastq/alerts/failures.py).

Fork safety: the supervisor forks children while its delivery thread may run. The thread logs
only while holding ``_FORK_GUARD``, which a fork takes first (``os.register_at_fork``), so a
child never inherits the log stream's lock held by a thread that does not exist in it.
"""
from __future__ import annotations

import importlib
import json
import os
import queue
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import structlog

from fastq.alerts.alert import Alert

if TYPE_CHECKING:
    from fastq.config import Settings

log = structlog.get_logger("fastq.alerts")
QUEUE_SIZE = 1000  # alerts waiting for the thread; more are dropped (and logged)
BACKOFF_S = 0.5
BACKOFF_MAX_S = 30.0

_FORK_GUARD = threading.Lock()
os.register_at_fork(before=_FORK_GUARD.acquire, after_in_parent=_FORK_GUARD.release,
                    after_in_child=_FORK_GUARD.release)


def _log(level: str, event: str, **kw: Any) -> None:
    with _FORK_GUARD:
        getattr(log, level)(event, **kw)


def load_callback(path: str) -> Callable[[Alert], Any]:
    """The callable named by ``path`` ("module:function" or "module.function"); a clear
    ``ValueError`` when it cannot be imported or is not callable."""
    module, sep, attr = path.partition(":")
    if not sep:
        module, _, attr = path.rpartition(".")
    try:
        fn = getattr(importlib.import_module(module), attr) if module else None
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"alert_callbacks: cannot load {path!r}: {exc}") from exc
    if not callable(fn):
        raise ValueError(f"alert_callbacks: {path!r} is not a callable")
    return fn


def wanted(app: Any) -> bool:
    """Whether ``app`` sends alerts at all: some webhook or callback is configured."""
    conf = app.settings
    return bool(conf.alert_webhooks or conf.alert_callbacks or app.alert_callbacks)


class Delivery:
    """The alert outbox of one process (see the module docstring)."""

    def __init__(self, settings: Settings, callbacks: Iterable[Callable[[Alert], Any]] = ()):
        self.webhooks = list(settings.alert_webhooks)
        self.callbacks = [*callbacks, *(load_callback(p) for p in settings.alert_callbacks)]
        self.timeout_s = settings.alert_timeout_s
        self.retries = settings.alert_retries
        self.poll_s = settings.alert_check_s
        self.sources: list[Callable[[], list[Alert]]] = []
        self._pid = 0
        self._queue: queue.Queue[Alert] = queue.Queue(QUEUE_SIZE)
        self._thread: threading.Thread | None = None

    def send(self, alert: Alert) -> None:
        """Queue ``alert`` for the thread; never blocks."""
        self._ensure_thread()
        try:
            self._queue.put_nowait(alert)
        except queue.Full:
            _log("warning", "alert dropped: too many waiting", kind=alert.kind, summary=alert.summary)

    def start(self) -> None:
        """Start the thread now (it polls ``sources`` even if nothing is sent)."""
        self._ensure_thread()

    def close(self, timeout: float | None = None) -> bool:
        """Collect the sources once more and wait up to ``timeout`` (default ``alert_timeout_s``)
        for what is queued to be delivered; True if it all was."""
        if self._thread is None or self._pid != os.getpid():
            return True
        for alert in self._collect():
            self.send(alert)
        deadline = time.monotonic() + (self.timeout_s if timeout is None else timeout)
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.01)
        return not self._queue.unfinished_tasks

    def _ensure_thread(self) -> None:
        if self._pid != os.getpid():  # first use, or a fork: this process has no thread yet
            self._pid = os.getpid()
            self._queue = queue.Queue(QUEUE_SIZE)
            self._thread = threading.Thread(target=self._run, name="fastq-alerts", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        next_poll = time.monotonic() + self.poll_s
        while True:
            try:
                alert: Alert | None = self._queue.get(timeout=max(next_poll - time.monotonic(), 0))
            except queue.Empty:
                alert = None
            if alert is not None:
                try:
                    self.deliver(alert)
                finally:
                    self._queue.task_done()
            if time.monotonic() >= next_poll:
                next_poll = time.monotonic() + self.poll_s
                for gathered in self._collect():
                    self.deliver(gathered)

    def _collect(self) -> list[Alert]:
        out = []
        for source in self.sources:
            try:
                out.extend(source())
            except Exception:  # noqa: BLE001 - a source must not stop delivery
                _log("exception", "alert source failed")
        return out

    def deliver(self, alert: Alert) -> None:
        """Call every callback, then POST every webhook (with retries); in the calling thread."""
        for fn in self.callbacks:
            try:
                fn(alert)
            except Exception:  # noqa: BLE001 - a user's callback must not stop delivery
                _log("exception", "alert callback failed", kind=alert.kind,
                     callback=getattr(fn, "__qualname__", repr(fn)))
        if self.webhooks:
            body = json.dumps(alert.payload(), default=str).encode()
            for url in self.webhooks:
                self._post(url, body, alert)

    def _post(self, url: str, body: bytes, alert: Alert) -> bool:
        request = urllib.request.Request(url, data=body, method="POST",
                                         headers={"Content-Type": "application/json",
                                                  "User-Agent": "fastq-alerts"})
        for attempt in range(self.retries + 1):
            try:
                with urllib.request.urlopen(request, timeout=self.timeout_s) as reply:
                    reply.read()
                return True
            except Exception as exc:  # noqa: BLE001 - HTTP errors, refused, timed out: retry
                error = repr(exc)
            if attempt < self.retries:
                time.sleep(min(BACKOFF_S * 2 ** attempt, BACKOFF_MAX_S))
        _log("warning", "alert webhook failed; alert not delivered", url=url, kind=alert.kind,
             attempts=self.retries + 1, error=error)
        return False
