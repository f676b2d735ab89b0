"""The supervisor's alert checks: dead-letter growth and queue age every ``alert_check_s``, lost
workers every ``heartbeat_s`` (both from the overseer's tick, fastq/worker/overseer.py: a few
Redis reads), and its own children dying unasked (from its reaping). Delivery is the
supervisor's alert thread (fastq/alerts/delivery.py).

Every supervisor checks every queue (``broker.queues()``, so a queue nobody reads is watched too).
Before sending, a check takes the alert's marker (``broker.claim_alert``, SET NX PX for
``alert_repeat_s``): of several workers seeing the same condition one sends it, and a condition
that lasts alerts again only once the marker expired.

A worker is lost when its health record (fastq/worker/health.py, TTL three heartbeats) expires
without its last record saying it was stopping: a killed or frozen worker, or a lost host. Only
other workers can see that, so run two or more for worker-loss alerts.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgpack
import structlog

from fastq.alerts.alert import DLQ_GROWTH, QUEUE_AGE, WORKER_LOST, Alert

if TYPE_CHECKING:
    from fastq.alerts.delivery import Delivery

log = structlog.get_logger("fastq.alerts")


class AlertChecks:
    """One supervisor's alert checks; ``tick`` is called on every overseer tick."""

    def __init__(self, app: Any, worker: str, delivery: Delivery):
        self.app = app
        self.conf = app.settings
        self.worker = worker  # this supervisor's name: it never reports itself lost
        self.delivery = delivery
        self._dead_letters: dict[str, int] = {}  # queue -> count at the last check
        self._workers: dict[str, dict] = {}  # worker -> its last health record seen
        self._next_queues = 0.0
        self._next_workers = 0.0

    def tick(self, now: float) -> None:
        """Run the checks that are due (``now`` is ``time.monotonic()``); a failing check is
        logged and tried again at its next interval."""
        if now >= self._next_queues:
            self._next_queues = now + self.conf.alert_check_s
            self._guarded(self.check_queues)
        if now >= self._next_workers:
            self._next_workers = now + self.conf.heartbeat_s
            self._guarded(self.check_workers)

    def _guarded(self, check, *args: Any) -> None:
        try:
            check(*args)
        except Exception as exc:  # noqa: BLE001 - an outage must not stop the supervisor
            log.warning("alert check failed", check=check.__name__, error=str(exc))

    def check_queues(self) -> None:
        broker = self.app.broker
        growth, max_age_s = self.conf.alert_dlq_growth, self.conf.alert_queue_age_s
        for queue in broker.queues():
            if growth:
                count = broker.dead_letter_count(queue)
                before = self._dead_letters.get(queue)
                self._dead_letters[queue] = count
                if before is not None and count - before >= growth:
                    self._raise(f"{DLQ_GROWTH}:{queue}", Alert(
                        DLQ_GROWTH, f"{count - before} new dead letters in queue {queue} in "
                        f"{self.conf.alert_check_s:g} s ({count} in all)",
                        {"queue": queue, "new": count - before, "total": count,
                         "interval_s": self.conf.alert_check_s}, self.worker))
            if max_age_s:
                age_s = broker.waiting_age_ms(queue) / 1000.0
                if age_s > max_age_s:
                    self._raise(f"{QUEUE_AGE}:{queue}", Alert(
                        QUEUE_AGE, f"queue {queue}: oldest waiting message is {age_s:.1f} s old "
                        f"(threshold {max_age_s:g} s)",
                        {"queue": queue, "age_s": round(age_s, 3), "threshold_s": max_age_s},
                        self.worker))

    def check_workers(self) -> None:
        live = {}
        for raw in self.app.broker.health_reports():
            rec = msgpack.unpackb(raw)
            live[rec["worker"]] = rec
        for name, last in self._workers.items():
            if name in live or name == self.worker or last.get("stopping"):
                continue
            self._raise(f"{WORKER_LOST}:{name}", Alert(
                WORKER_LOST, f"worker {name} (pid {last.get('pid')} on {last.get('host')}) stopped "
                "reporting without shutting down",
                {"lost_worker": name, "pid": last.get("pid"), "host": last.get("host"),
                 "last_seen": last.get("at"), "children": len(last.get("children", ()))},
                self.worker))
        self._workers = live

    def child_died(self, consumer: str, pid: int, code: int) -> None:
        """A child of this supervisor exited unasked (a crash, the OOM killer's SIGKILL): it is
        restarted, and what it ran comes back by its pending entries, but someone should know.
        ``code`` is the exit code, or minus the signal that killed it."""
        how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
        self._guarded(self._raise, f"{WORKER_LOST}:{consumer}", Alert(
            WORKER_LOST, f"worker child {consumer} (pid {pid}) {how}; restarted",
            {"lost_child": consumer, "pid": pid, "exit": code}, self.worker))

    def _raise(self, alert_key: str, alert: Alert) -> None:
        if self.app.broker.claim_alert(alert_key, int(self.conf.alert_repeat_s * 1000)):
            log.warning("alert", kind=alert.kind, summary=alert.summary)
            self.delivery.send(alert)



