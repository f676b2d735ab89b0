"""The supervisor: forks N children, restarts the ones that die, and shuts them down.

It never relays messages (children read Redis themselves). First SIGTERM/SIGINT: warm shutdown
(children finish and ack their batch, then exit). A second one: cold (children are killed; what they
had in flight stays pending and is re-run, at least once, by the next child with the same name).
"""
from __future__ import annotations

import gc
import os
import signal
import socket
import time
from typing import TYPE_CHECKING

import structlog

from fastq.alerts import delivery as alert_delivery
from fastq.alerts.checks import AlertChecks
from fastq.alerts.failures import FailureAlerts
from fastq.errors import BrokerOutOfMemory
from fastq.middleware import call_hooks
from fastq.worker import health
from fastq.worker.child import Child
from fastq.worker.overseer import Overseer
from fastq.worker.remote import Remote
from fastq.worker.slots import Slots
from fastq.worker.tuning import Tuning

if TYPE_CHECKING:
    from collections.abc import Callable

    from fastq.app import App

log = structlog.get_logger("fastq.supervisor")
RESTART_BACKOFF_MAX = 5.0
COMMAND_POLL_S = 0.05  # how often the supervisor looks for remote-control commands
WORN_OUT = 3  # a child's exit code when it stopped to be replaced (replaced at once, no back-off)
MAINTENANCE_S = 30.0


class Supervisor:
    def __init__(self, app: App, concurrency: int, queues: list[str], name: str | None = None):
        self.app = app
        self.concurrency = concurrency
        self.queues = list(queues)  # shared with the overseer; changed in place by consume()
        self.name = name or f"{socket.gethostname()}.{os.getpid()}"
        self.children: dict[int, int] = {}  # pid -> slot
        self.started_at: dict[int, float] = {}  # slot -> time of last start
        self.backoff: dict[int, float] = {}  # slot -> current restart delay
        self.signals = 0
        self._ready = False  # every child has entered its fetch loop (worker_ready ran)
        self.remote: Remote | None = None  # answers app.control / fastq inspect
        self._next_command_poll = 0.0
        self.pid = os.getpid()
        self.slots = Slots(concurrency)
        self.tuning = Tuning()  # remote control's overrides, read by the children
        self._retiring: set[int] = set()  # slots whose child was stopped by pool_shrink
        self.overseer = Overseer(app, self.queues, self.slots, self.consumer, self._kill_slot, self.name,
                                 self.started_at)
        self._log = log.bind(worker=self.name)
        self.alerts: alert_delivery.Delivery | None = None  # this supervisor's alert outbox
        if alert_delivery.wanted(app):  # docs/alerts.md
            self.alerts = alert_delivery.Delivery(app.settings, app.alert_callbacks)
            self.overseer.alerts = AlertChecks(app, self.name, self.alerts)
            if not any(isinstance(m, FailureAlerts) for m in app.middleware):
                app.add_middleware(FailureAlerts(app))

    def busy_children(self) -> int:
        """Children running a task now (read from the slot table)."""
        return sum(self.slots.read(slot).busy for slot in list(self.children.values()))

    def consumers(self) -> set[str]:
        """The consumer names of the children running now."""
        return {self.consumer(slot) for slot in list(self.children.values())}

    def consumer(self, slot: int) -> str:
        """Stable per slot, so a restarted child re-reads its predecessor's pending entries."""
        return f"{self.name}:{slot}"

    def run(self) -> int:
        broker = self.app.broker  # resolves (or starts) the broker before any fork
        try:
            broker.prepare(self.queues)
        except BrokerOutOfMemory as exc:  # the children prepare too, retrying until it is freed
            self._log.warning("redis is out of memory; children will retry", error=str(exc))
        self.app.close()  # children open their own connections
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
            signal.signal(sig, self._on_signal)
        self._log.info("worker starting", concurrency=self.concurrency, queues=self.queues,
                       broker=self.app.conf.broker_url, core=_core_impl())
        call_hooks(self.app.hooks.worker_boot, self, log=self._log)
        gc.freeze()  # keep the imported app's pages shared with the children (no GC writes to them)
        for slot in range(self.concurrency):
            self._spawn(slot)
        next_maintenance = time.monotonic() + MAINTENANCE_S
        warm_sent = False
        while self.children:
            self._reap()
            if self.signals and not warm_sent:
                warm_sent = True
                self.overseer.stopping = True  # children being stopped are not unhealthy
                self._log.info("warm shutdown: finishing in-flight tasks")
                self._signal_children(signal.SIGTERM)
            if self.signals > 1:
                self._log.warning("cold shutdown: killing children")
                self._signal_children(signal.SIGKILL)
            if not self._ready:
                self._check_ready()
            self._answer_commands()
            pause = self._oversee()
            if not self.signals and time.monotonic() >= next_maintenance:
                next_maintenance = time.monotonic() + MAINTENANCE_S
                self._maintenance()
            time.sleep(pause)
        self.overseer.leave()
        call_hooks(self.app.hooks.worker_shutdown, self, log=self._log)
        if self.alerts is not None:
            self.alerts.close()
        self._log.info("worker stopped")
        return 0

    def _answer_commands(self) -> None:
        """Remote control (fastq/worker/remote.py); Redis trouble is logged, never fatal."""
        now = time.monotonic()
        if now < self._next_command_poll:
            return
        self._next_command_poll = now + COMMAND_POLL_S
        try:
            if self.remote is None:
                self.remote = Remote(self)
            self.remote.poll()
        except Exception as exc:  # noqa: BLE001 - a Redis outage must not stop the supervisor
            self._log.warning("remote control failed, retrying", error=str(exc))

    def _check_ready(self) -> None:
        """``worker_ready`` hooks, once: when every child has started fetching."""
        if all(self.slots.read(slot).last_loop > 0 for slot in self.children.values()):
            self._ready = True
            self._log.info("worker ready", concurrency=self.concurrency)
            call_hooks(self.app.hooks.worker_ready, self, log=self._log)

    def _oversee(self) -> float:
        """Run the overseer's duties; Redis trouble is logged and retried, never fatal."""
        try:
            return self.overseer.tick()
        except Exception as exc:  # noqa: BLE001 - a Redis outage must not stop the supervisor
            self._log.warning("overseer tick failed, retrying", error=str(exc))
            return 0.5

    def _kill_slot(self, slot: int, why: str, before_restart: Callable[[], None] | None = None,
                   ) -> None:
        """SIGKILL the child in ``slot``, reap it, call ``before_restart`` (the overseer records
        the killed task's outcome there, before a replacement could re-run it) and start its
        replacement."""
        killed = False
        for pid, s in list(self.children.items()):
            if s == slot:
                try:
                    os.kill(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
                except (ProcessLookupError, ChildProcessError):
                    pass
                del self.children[pid]
                killed = True
                self._log.warning("child killed", consumer=self.consumer(slot), reason=why)
        try:
            if before_restart is not None:
                before_restart()
        finally:
            if slot in self._retiring:
                self._retired(slot)
            elif killed and not self.signals:
                self._spawn(slot)

    # -- remote control: the pool and the queues --------------------------------------------
    def resize(self, concurrency: int) -> int:
        """Grow or shrink the pool to ``concurrency`` children (``pool_grow`` / ``pool_shrink``
        / ``autoscale``); returns the new size. New children take the lowest free slots; the
        children of the highest slots are stopped warm (they finish and ack their batch) and
        not replaced."""
        concurrency = max(1, min(concurrency, self.slots.capacity))
        self.concurrency = concurrency
        serving = sorted(s for s in self.children.values() if s not in self._retiring)
        for slot in serving[concurrency:]:
            self._retiring.add(slot)
            for pid, s in self.children.items():
                if s == slot:
                    os.kill(pid, signal.SIGTERM)
        taken = set(self.children.values())
        free = (s for s in range(self.slots.capacity) if s not in taken)
        for _ in range(concurrency - len(serving)):
            slot = next(free)
            self.slots.count = max(self.slots.count, slot + 1)
            self._spawn(slot)
        self._log.info("pool resized by remote control", concurrency=concurrency)
        return concurrency

    def _retired(self, slot: int) -> None:
        self._retiring.discard(slot)
        self.slots.clear(slot, 0.0)
        self.slots.count = max(self.children.values(), default=-1) + 1

    def consume(self, queues: list[str]) -> None:
        """Read ``queues`` from now on (``add_consumer`` / ``cancel_consumer``): the overseer
        shares this list; the children pick it up from the tuning block."""
        self.app.broker.prepare(queues)
        self.queues[:] = queues
        self.tuning.overrides.queues = list(queues)
        self.tuning.publish()
        self._log.info("queues changed by remote control", queues=queues)

    def _on_signal(self, signum, _frame) -> None:
        self.signals += 1

    def _signal_children(self, sig: int) -> None:
        for pid in list(self.children):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass

    def _spawn(self, slot: int) -> None:
        self.started_at[slot] = time.monotonic()
        pid = os.fork()
        if pid == 0:  # the child
            code = 1
            try:
                for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
                    signal.signal(sig, signal.SIG_DFL)
                worn_out = Child(self.app, self.consumer(slot), list(self.queues),
                                 parent_pid=self.pid, slots=self.slots, slot=slot,
                                 tuning=self.tuning).run()
                code = WORN_OUT if worn_out else 0
            except BaseException:  # noqa: BLE001 - logged, and the supervisor restarts us
                log.exception("child crashed", consumer=self.consumer(slot))
            finally:
                os._exit(code)
        self.children[pid] = slot

    def _reap(self) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                self.children.clear()
                return
            if pid == 0:
                return
            slot = self.children.pop(pid, None)
            if slot is None:
                continue
            if self.signals:
                continue
            if slot in self._retiring:
                self._retired(slot)
                continue
            code = os.waitstatus_to_exitcode(status)
            if code == WORN_OUT:  # planned: max_tasks_per_child / max_memory_per_child
                self._spawn(slot)
                continue
            lived = time.monotonic() - self.started_at.get(slot, 0)
            delay = 0.0 if lived > 10 else min(self.backoff.get(slot, 0.05) * 2, RESTART_BACKOFF_MAX)
            self.backoff[slot] = delay
            self._log.warning("child exited, restarting", consumer=self.consumer(slot), pid=pid,
                              exit=code, restart_in=delay)
            if self.overseer.alerts is not None:
                self.overseer.alerts.child_died(self.consumer(slot), pid, code)
            if delay:
                time.sleep(delay)
            self._spawn(slot)

    def _maintenance(self) -> None:
        """Housekeeping that needs no hot path: trim leftovers below the oldest unacked entry, and
        remove dead consumers from the groups."""
        try:
            broker = self.app.broker
            for queue in self.queues:
                broker.trim(queue)
            self._forget_dead_consumers()
        except Exception as exc:  # never let housekeeping take the supervisor down
            self._log.warning("maintenance failed", error=str(exc))

    def _forget_dead_consumers(self) -> None:
        """Remove the consumers of our queues' groups that are gone: no heartbeat, in no live
        supervisor's health record, unseen for a heartbeat's lifetime, holding nothing. (Each
        restart under a new name leaves one per stream; what a dead one holds comes back by
        reclaim first, and it goes on a later round.)"""
        broker = self.app.broker
        live = health.live_consumers(broker) | {self.consumer(s) for s in range(self.concurrency)}
        unseen_ms = self.app.conf.heartbeat_s * 3000  # a heartbeat key's TTL
        for queue in self.queues:
            for st in broker.consumers(queue):
                if st.name in live or st.pending or st.idle_ms < unseen_ms:
                    continue
                if broker.forget_consumer(st.name, [queue]):
                    self._log.info("removed a dead consumer from the group", consumer=st.name,
                                   queue=queue)


def _core_impl() -> str:
    from fastq import _core

    return _core.IMPLEMENTATION
