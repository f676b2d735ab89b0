"""Answering Celery's remote-control broadcasts (Flower's worker pages, ``celery inspect``) from
the supervisor, in a thread of its own.

Inspect commands are answered here, by the same handlers as fastq's own control stream
(fastq/worker/remote.py). Commands that change the worker (``pool_grow``, ``shutdown`` ...) are
passed on to fastq's control stream addressed to this worker, so that the supervisor's loop runs
them, and its reply is relayed; ``revoke`` is fastq's revoke.
"""
from __future__ import annotations

import fnmatch
import threading
from typing import Any

import structlog

from fastq.events import wire
from fastq.worker.remote import Remote

log = structlog.get_logger("fastq.events")
INSPECT = frozenset({"ping", "stats", "active_queues", "registered", "scheduled", "active",
                     "reserved", "revoked", "conf"})
PASSED_ON = frozenset({"rate_limit", "time_limit", "pool_grow", "pool_shrink", "autoscale",
                       "add_consumer", "cancel_consumer", "shutdown"})


class CeleryMailbox:
    def __init__(self, worker: Any):
        self.worker = worker
        self.app = worker.app
        self.broker = self.app.broker.with_timeout(5.0)
        self.remote = Remote(worker)
        self.clock = wire.Clock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True, name="fastq-celery-pidbox")
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(3)

    def _run(self) -> None:
        pubsub = None
        while not self._stop.is_set():
            try:
                if pubsub is None:
                    pubsub = self.broker.celery_mailbox()
                message = pubsub.get_message(timeout=0.5)
                if message and message.get("type") == "message":
                    self.answer(message["data"])
            except Exception as exc:  # noqa: BLE001 - Redis trouble: resubscribe, never fatal
                log.warning("celery remote control failed, retrying", error=str(exc))
                pubsub = None
                self._stop.wait(1.0)

    def answer(self, data: bytes) -> None:
        try:
            command, _headers = wire.opened(data)
            method = command["method"]
            reply_to = command.get("reply_to")
        except (ValueError, KeyError, TypeError):
            log.warning("ignored a malformed celery remote-control message")
            return
        if not self._addressed(command):
            return
        reply = self._reply(method, command.get("arguments") or {})
        if reply_to and reply is not None:
            self.broker.celery_reply(
                reply_to["exchange"], reply_to["routing_key"],
                wire.envelope({self.worker.name: reply}, reply_to["exchange"],
                              reply_to["routing_key"],
                              {"ticket": command.get("ticket"), "clock": self.clock.tick()}, 2))

    def _addressed(self, command: dict) -> bool:
        wanted = command.get("destination")
        if wanted:
            return self.worker.name in wanted
        pattern = command.get("pattern")
        return not pattern or fnmatch.fnmatch(self.worker.name, pattern)

    def _reply(self, method: str, arguments: dict) -> Any:
        try:
            return self._run_command(method, arguments)
        except Exception as exc:  # noqa: BLE001 - a bad command must not stop the thread
            return {"error": f"{type(exc).__name__}: {exc}"}

    def _run_command(self, method: str, arguments: dict) -> Any:
        if method in INSPECT:
            return getattr(self.remote, f"do_{method}")(**arguments)
        if method == "revoke":
            ids = arguments.get("task_id")
            ids = [ids] if isinstance(ids, str) else list(ids or [])
            self.app.control.revoke(ids, terminate=bool(arguments.get("terminate")))
            return {"ok": f"tasks {', '.join(ids)} flagged as revoked"}
        if method in PASSED_ON:
            replies = self.app.control.broadcast(method, arguments, [self.worker.name],
                                                 reply=True, timeout=3.0, limit=1)
            return replies[0][self.worker.name] if replies else {"error": "no reply in time"}
        return {"error": f"fastq workers have no command {method!r}"}
