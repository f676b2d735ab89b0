"""The supervisor's duties in Redis, run from its loop between process checks.

- move due delayed messages (countdown, eta, retries, rate-limited) into the streams;
- renew the leases of everything its children hold, so long tasks are never reclaimed;
- enforce hard time limits and ``revoke(terminate=True)`` by killing the child, then record the
  outcome (retry or failure, or REVOKED) for the task it was running;
- hand a busy child's prefetched, unstarted messages back to the queue (no hostage tasks);
- restart a child whose fetch loop has gone quiet (watchdog);
- write the worker's health record (fastq/worker/health.py) for ``fastq health``;
- run the alert checks, when alerts are configured (fastq/alerts/checks.py).
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING

import msgpack
import structlog

from fastq import keys
from fastq._core import decode_message
from fastq.broker.base import Finish
from fastq.errors import DecodeError, TimeLimitExceeded
from fastq.worker import health, outcome
from fastq.workflows.advance import advance
from fastq.workflows.watch import sweep_outside

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from fastq.alerts.checks import AlertChecks
    from fastq.app import App
    from fastq.worker.slots import Slots

log = structlog.get_logger("fastq.overseer")


class Overseer:
    def __init__(self, app: App, queues: list[str], slots: Slots, consumer: Callable[[int], str],
                 kill: Callable[..., None], name: str = "worker",
                 started: Mapping[int, float] | None = None):
        self.app = app
        self.name = name  # the worker's, for its health record
        self.conf = app.conf
        self.queues = queues
        self.slots = slots
        self.consumer = consumer
        # kill(slot, why, before_restart=None): SIGKILL the child in slot, wait for it to die, call
        # before_restart, then start its replacement
        self.kill = kill
        self.started = started  # slot -> when its current child was started (time.monotonic())
        self.stopping = False  # a warm shutdown: children are finishing and exiting
        self._next_promote = 0.0
        self._next_renew = 0.0
        self._next_revocations = 0.0
        self._revocation_cursor: str | None = None
        self._terminate: dict[str, float] = {}  # task ids to stop if running
        self._handed_back: dict[int, float] = {}  # slot -> start time of the task we handled
        self._next_health = 0.0
        self._next_sweep = 0.0
        self._watch_offset = 0  # where the next sweep of depends_on waits starts
        self.watchdog_restarts = 0
        self.renewed = 0  # leases renewed (entries), for the metrics
        self._last_watchdog: float | None = None  # epoch s
        self.alerts: AlertChecks | None = None  # set by the supervisor when alerts are configured
        self._log = log

    def tick(self) -> float:
        """Do what is due; return how long the caller may sleep before the next tick."""
        now = time.monotonic()
        broker = self.app.broker
        if now >= self._next_promote:
            self._next_promote = self._promote_due(now)
        if now >= self._next_renew:
            self._next_renew = now + self.conf.lease_ms / 3000.0
            for slot in range(self.slots.count):
                self.renewed += broker.renew(self.consumer(slot), self.queues) or 0
        if now >= self._next_revocations:
            self._next_revocations = now + self.conf.revocation_sync_ms / 1000.0
            self._follow_revocations()
        for slot in range(self.slots.count):
            self._check_slot(slot, time.monotonic())
        if now >= self._next_health:
            self._next_health = now + self.conf.heartbeat_s
            self._report_health()
        if now >= self._next_sweep:
            self._next_sweep = now + self.conf.workflow_sweep_s
            self._sweep_graphs()
        if self.alerts is not None:
            self.alerts.tick(now)
        return min(self.conf.delayed_tick_ms / 1000.0, max(self._next_promote - time.monotonic(), 0.0))

    def _sweep_graphs(self) -> None:
        """Send workflow nodes that became ready more than a sweep ago and were never sent (the
        worker that made them ready died before sending): each send is deduplicated, so a
        worker still sending them cannot cause a second run. Then settle depends_on waits on
        tasks that finished unseen (fastq/workflows/watch.py)."""
        broker = self.app.broker
        min_age_ms = int(self.conf.workflow_sweep_s * 2000)
        ttl_ms = int(self.conf.result_expires * 1000)
        advance(self.app, [broker.graph_collect(dag_id, min_age_ms, ttl_ms)
                           for dag_id in broker.running_graphs()])
        self._watch_offset = sweep_outside(self.app, self._watch_offset)

    def _promote_due(self, now: float) -> float:
        """Move due delayed messages into the streams; return when to look again (monotonic):
        at the next tick, or sooner when a message already waiting falls due before it, so a
        countdown starts on time rather than up to ``delayed_tick_ms`` late."""
        wall_ms = int(time.time() * 1000)
        wake = now + self.conf.delayed_tick_ms / 1000.0
        for queue in self.queues:
            while True:
                moved, next_due = self.app.broker.promote(queue, wall_ms, 1000)
                if moved < 1000:
                    break
            if next_due is not None:
                wake = min(wake, now + max(next_due - wall_ms, 0) / 1000.0)
        return wake

    def _report_health(self, stopped: bool = False) -> None:
        rec = health.record(self.name, self.slots, self.consumer, self.conf.block_ms / 1000.0,
                            self.conf.stall_s, self.watchdog_restarts, self._last_watchdog,
                            self.started, self.stopping or stopped)
        rec["stopped"] = stopped
        for problem in health.problems(rec):
            self._log.warning("unhealthy", worker=self.name, problem=problem)
        self.app.broker.report_health(self.name, msgpack.packb(rec),
                                      int(self.conf.heartbeat_s * 3000))

    def leave(self) -> None:
        """The last health record of a worker that stopped warm (``stopped``: ``fastq health``
        no longer counts it live): alert checks elsewhere see that it stopped, rather than lost
        it, when the record expires. Redis trouble is only logged."""
        self.stopping = True
        try:
            self._report_health(stopped=True)
        except Exception as exc:  # noqa: BLE001 - on the way out; the record just expires
            self._log.warning("could not write the last health record", error=str(exc))

    def _follow_revocations(self) -> None:
        broker = self.app.broker
        if self._revocation_cursor is None:
            _live, self._revocation_cursor = broker.live_revocations()
            return
        self._revocation_cursor, new = broker.revocations_since(self._revocation_cursor)
        for task_id, until, terminate in new:
            if terminate:
                self._terminate[task_id] = until
        wall = time.time()
        self._terminate = {k: v for k, v in self._terminate.items() if v > wall}

    def _check_slot(self, slot: int, now: float) -> None:
        state = self.slots.read(slot)
        if state.busy:
            if state.deadline and now > state.deadline:
                self._stop_running(slot, state, "hard time limit exceeded")
            elif state.task_id in self._terminate:
                self._stop_running(slot, state, "revoked")
            elif (now - state.started > self.conf.release_after_ms / 1000.0
                  and self._handed_back.get(slot) != state.started):
                self._handed_back[slot] = state.started
                moved = self.app.broker.hand_back(self.consumer(slot), self.queues, state.entry)
                if moved:
                    self._log.info("handed prefetched messages of a busy child back to the queue",
                                   consumer=self.consumer(slot), count=moved, busy_with=state.task_id)
        elif state.last_loop and now - state.last_loop > self.conf.block_ms / 1000.0 + self.conf.stall_s:
            self._log.error("child's fetch loop has gone quiet; restarting it (watchdog)",
                            consumer=self.consumer(slot), quiet_s=round(now - state.last_loop, 1))
            self.slots.clear(slot, now)
            self.watchdog_restarts += 1
            self._last_watchdog = time.time()
            self.kill(slot, "watchdog")

    def _stop_running(self, slot: int, state, why: str) -> None:
        """Kill the child, then record the task's outcome and ack it before a new child starts:
        the replacement re-runs whatever is still pending under its consumer name."""
        self._log.warning("killing child", consumer=self.consumer(slot), task_id=state.task_id,
                          reason=why)
        self.kill(slot, why, lambda: self._record_stopped(slot, state, why))

    def _record_stopped(self, slot: int, state, why: str) -> None:
        """The outcome of the task a killed child was running (REVOKED, or retry / failure)."""
        self.slots.clear(slot, time.monotonic())
        broker = self.app.broker
        done = Finish()
        data = broker.entry(state.stream, state.entry)
        queue = keys.parse_stream(state.stream)[0]
        threshold = self.conf.compress_threshold
        if data is not None:
            try:
                msg = decode_message(data)
            except DecodeError:
                msg = None
            if msg is not None and msg.id != state.task_id:
                # a chain step run in the batch of the entry's task (fastq/workflows/handoff.py):
                # that entry is not acknowledged yet, and the new child runs it (and the chain
                # from it) again
                return
            task = self.app.tasks.get(msg.task) if msg else None
            if msg is not None and task is not None:
                if why == "revoked":
                    outcome.revoked(done, task, msg, "revoked (terminated)", threshold)
                else:
                    exc = TimeLimitExceeded(f"hard time limit ({msg.hard_limit_ms / 1000:g} s) "
                                            "exceeded")
                    outcome.failed(done, task, msg, queue, exc, threshold, self.consumer(slot),
                                   state.entry)
        done.ack(state.stream, state.entry)
        advance(self.app, broker.finish(done, int(self.conf.result_expires * 1000)))
