"""One worker child: fetch -> select -> execute -> finish, top to bottom.

Each child is its own consumer in the ``fastq`` group with a stable name (``worker:slot``), talks to
the broker itself, and on start first re-reads its own pending entries, so a child restarted after a
crash picks up what its predecessor had in flight straight away. Entries left by a worker that never
came back are reclaimed (XAUTOCLAIM) once their lease has run out.
"""
from __future__ import annotations

import asyncio
import os
import signal
import socket
import time
from typing import TYPE_CHECKING

import msgpack
import structlog

from fastq import keys, states
from fastq._core import decode_message, plan_levels, unpack_body
from fastq.broker.base import Delivery, Finish, Release
from fastq.errors import (
    BrokerOutOfMemory,
    BrokerUnavailable,
    DeadLettered,
    DecodeError,
    NotRegistered,
    SoftTimeLimitExceeded,
)
from fastq.middleware import DeferMessage, SkipMessage, call_hooks
from fastq.ratelimit import parse_rate
from fastq.task import current_request
from fastq.worker import gates, outcome
from fastq.workflows.advance import ERRBACK, errback_arguments, report_sent, to_release
from fastq.workflows.handoff import Handoff
from fastq.workflows.watch import DependencyWatch

if TYPE_CHECKING:
    from fastq.app import App
    from fastq.broker import Broker
    from fastq.message import Message
    from fastq.task import Task
    from fastq.worker.slots import Slots
    from fastq.worker.tuning import Tuning

log = structlog.get_logger("fastq.worker")
TRANSIENT = (BrokerUnavailable, ConnectionError, TimeoutError)
REFUSED = (states.IGNORED, states.REJECTED)  # the task raised Ignore or Reject: not a failure


def _entry_ms(entry_id: bytes) -> int:
    return int(entry_id[:entry_id.index(b"-")]) if isinstance(entry_id, bytes) else 0


def _peak_rss_kib() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux


def _on_soft_limit(_signum, _frame):
    raise SoftTimeLimitExceeded("soft time limit exceeded")


class Child:
    """Runs tasks from ``queues`` until :meth:`stop` (warm: the current batch is finished and acked)."""

    def __init__(self, app: App, consumer: str, queues: list[str], broker: Broker | None = None,
                 parent_pid: int | None = None, handle_signals: bool = True,
                 slots: Slots | None = None, slot: int = 0, tuning: Tuning | None = None):
        self.app = app
        self.handle_signals = handle_signals  # False in a non-main thread (fastq.testing)
        self.parent_pid = parent_pid  # stop (warm) when this process is no longer our parent
        self.slots = slots  # shared with the supervisor (time limits, revoke, watchdog)
        self.slot = slot
        self.conf = app.settings  # the engine's settings (app.conf may be Celery's mapping over them)
        self.consumer = consumer
        self.queues = queues
        self.broker = broker or app.broker
        self.tasks = app.tasks
        self.accept_pickle = "pickle" in self.conf.accept_content
        self.result_ttl_ms = int(self.conf.result_expires * 1000)
        self.threshold = self.conf.compress_threshold
        self.credits = [0.0] * keys.LEVELS  # round-robin state of the order within a batch
        self._fetch_credits = [0.0] * keys.LEVELS  # ... and of the shares of a weighted fetch
        self._flooded: set[int] = set()  # levels whose last read filled what it asked for
        self._newest_ms = [0] * keys.LEVELS  # id time of the newest entry read at each level
        self.processed = 0
        self.failed = 0
        # engine events a metrics middleware reads per round (fastq/metrics/recorder.py)
        self.engine_counts = {"reclaimed": 0, "poison": 0, "deferred": 0, "broker_errors": 0}
        self.stopping = False
        self.revoked: dict[str, float] = {}  # task id -> epoch s until which it stays revoked
        self._revocation_cursor: str | None = None
        self._next_revocation_sync = 0.0
        self._next_reclaim = time.monotonic() + self.conf.reclaim_interval_s
        self._interrupted = False  # a broker error cut a round short (see run_once)
        self.current_stream = ""  # the stream of the delivery being run (for the steps)
        self.current_entry: bytes | None = None  # ... and its entry id (None: a chain step)
        self.current_data = b""  # ... and its envelope, as read (for the events)
        self.task_started = 0.0  # time.monotonic() as the running task (async: coroutine) began
        self._queues: dict[str, str] = {}  # stream key -> its queue
        self._loop: asyncio.AbstractEventLoop | None = None
        self._async_batch: list[tuple[Task, Message, tuple, dict, Delivery]] = []
        self._done = Finish()
        self._release: Release | None = None  # ready workflow nodes not yet sent
        self._handoff = Handoff(app)  # chain steps run (or sent) with their predecessor
        # the stream entry of the delivery being run, or of the one a chain step run in its
        # batch came from (the supervisor's view of what the child is busy with)
        self._origin: tuple[str, bytes] = ("", b"")
        self._next_batch: list[Delivery] | None = None  # read with the last round's outcomes
        # the batch read last (being run, or next), how many of it have started, and when it
        # was read (time.monotonic()): Flower's prefetched tasks and prefetch time (metrics)
        self.batch: list[Delivery] = []
        self.batch_started = 0
        self.batch_read_at = 0.0
        self._last_flush = time.monotonic()
        self._next_heartbeat = 0.0
        self._log = log.bind(consumer=consumer)
        self.hooks = app.hooks
        self.tuning = tuning  # remote control's overrides, from the supervisor
        self._tuned = 0  # the generation of them applied here
        self._time_limits = gates.TunedTimeLimits({})
        self._build_gates()
        self._watch = DependencyWatch(app)  # built in: depends_on waits on tasks run here
        self._after_flush = (self._watch.after_flush, *self.hooks.after_flush)
        self.worn_out = False
        self._recycles = bool(self.conf.max_tasks_per_child or self.conf.max_memory_per_child)
        self._call_hooks(self.hooks.child_init, self)

    def _build_gates(self) -> None:
        """The built-in steps, then the installed middleware's before_execute, in order; Revoked
        and Expired decide only when a revocation is in force or the message expires, so the
        lean list (without them) is run otherwise."""
        self._rate_gate = gates.RateLimited(self) if gates.RateLimited.wanted(self) else None
        rest = [self._time_limits.before_execute] if self._time_limits.limits else []
        if self._rate_gate is not None:
            rest.append(self._rate_gate.before_execute)
        rest += self.hooks.before_execute
        self._gates = [gates.Revoked(self).before_execute, gates.Expired().before_execute, *rest]
        self._lean_gates = rest

    def _check_tuning(self) -> None:
        if self.tuning is not None and self.tuning.generation != self._tuned:
            self._retune()

    def _retune(self) -> None:
        """Apply remote control's overrides (fastq/worker/tuning.py): rate and time limits of
        tasks, the queues to read."""
        generation, overrides = self.tuning.read()
        if overrides is None:  # being written: next round
            return
        if overrides.queues is not None and overrides.queues != self.queues:
            self.broker.prepare(overrides.queues)
            self._log.info("queues changed by remote control", queues=overrides.queues)
            self.queues = list(overrides.queues)
        for name, rate in overrides.rates.items():
            task = self.tasks.get(name)
            if task is not None:
                task.rate_limit, task.rate = rate, parse_rate(rate)
        for name, (soft_ms, hard_ms) in overrides.limits.items():
            task = self.tasks.get(name)
            if task is not None:
                task.soft_limit_ms, task.hard_limit_ms = soft_ms, hard_ms
        self._time_limits.limits = overrides.limits
        self._build_gates()
        self._tuned = generation

    # -- the loop ---------------------------------------------------------------------------
    def run(self) -> bool:
        """Serve until stopped. Broker outages are retried with backoff, never fatal. True when
        the child stopped to be replaced (``max_tasks_per_child``, ``max_memory_per_child``)."""
        if self.handle_signals:
            self._install_signals()
        self._log.info("child ready", pid=os.getpid(), queues=self.queues)
        self._with_retry(lambda: self.broker.prepare(self.queues))
        # Know the revocations before re-running a predecessor's batch: it may hold revoked tasks.
        self._with_retry(lambda: self._sync_revocations(time.monotonic()))
        self._with_retry(self.recover_own_pending)
        while not self.stopping:
            self._with_retry(lambda: self.run_once(self.conf.block_ms))
        self._with_retry(self.flush)
        self._leave_groups()
        self._call_hooks(self.hooks.child_shutdown, self)
        if self._loop is not None:
            self._loop.close()
        self._log.info("child stopped", processed=self.processed)
        return self.worn_out

    def run_once(self, block_ms: int) -> int:
        """One round: fetch a batch (blocking up to ``block_ms``), run it, write its outcomes."""
        if self._interrupted:
            # A broker error may have cut a batch short (or lost a fetch reply): what this consumer
            # holds but did not run stays pending under its name, and its leases are renewed, so
            # nobody else would ever run it. Write what did run, then run the rest.
            self.flush()
            self._async_batch = []
            self.recover_own_pending()
            self._interrupted = False
        now = time.monotonic()
        if self.slots is not None:
            self.slots.loop(self.slot, now)
        self._check_tuning()
        self._heartbeat(now)
        self._sync_revocations(now)
        if now >= self._next_reclaim:
            self._next_reclaim = now + self.conf.reclaim_interval_s
            self.reclaim()
        deliveries = self._next_batch
        if not deliveries:
            if self.hooks.child_idle:  # the read below may wait
                self._call_hooks(self.hooks.child_idle, self)
            deliveries = self._fetch(block_ms)
        self._next_batch = None
        if deliveries:
            # The fetch may have blocked for longer than revocation_sync_ms: catch up before
            # running what it brought, so a task revoked (or retuned) meanwhile is not run.
            self._sync_revocations(time.monotonic())
            self._check_tuning()
            self.process(deliveries)
            if self._recycles:
                self._check_worn_out()
            if self._done and not self.stopping:  # its outcomes and the next read: one trip
                self._next_batch = self._finish_and_fetch()
                return len(deliveries)
        self.flush(defer_release=True)  # the ready workflow nodes go out with the next fetch
        return len(deliveries)

    def _read_counts(self) -> list[int] | None:
        """How the next read is shared between levels: None reads ``prefetch`` from every
        stream. While two or more levels have more waiting than a read takes, the read itself
        is shared between them by weight (ordering a batch that holds ``prefetch`` of each would
        give every flooded level the same share); other levels are read in full."""
        if len(self._flooded) <= 1:
            return None
        prefetch = self.conf.prefetch
        counts = [prefetch] * keys.LEVELS
        flooded = [prefetch if level in self._flooded else 0 for level in range(keys.LEVELS)]
        now = int(time.time() * 1000)
        ages = [now - ms if ms else 0 for ms in self._newest_ms]
        plan = plan_levels(flooded, ages, self._fetch_credits, self.conf.priority_weights,
                           self.conf.priority_ageing_ms, prefetch)
        for level in self._flooded:
            counts[level] = plan.count(level)
        return counts

    def _fetch(self, block_ms: int) -> list[Delivery]:
        """Read the next batch (with the ready workflow nodes of the last round sent first)."""
        counts = self._read_counts()
        release = self._release
        deliveries = self.broker.fetch(self.consumer, self.queues, self.conf.prefetch,
                                       0 if counts else block_ms, counts=counts, release=release)
        self._read(deliveries, counts, release)
        return deliveries

    def _finish_and_fetch(self) -> list[Delivery]:
        """:meth:`flush` and the next read in one round trip (not blocking: an empty read is
        followed by a blocking fetch in the next round)."""
        done, counts = self._done, self._read_counts()
        if self.hooks.before_flush:
            self._call_hooks(self.hooks.before_flush, self, done)
        if done.nodes:
            self._hand_off(done)
        release = self._release
        steps, deliveries = self.broker.finish_and_fetch(
            done, self.result_ttl_ms, self.consumer, self.queues, self.conf.prefetch, counts,
            release)
        self._done = Finish()
        self._read(deliveries, counts, release)
        self._settled(done, steps)
        self._last_flush = time.monotonic()
        return deliveries

    def _hand_off(self, done: Finish) -> None:
        """Send the successors that the round's succeeded nodes release for certain with their
        outcomes (fastq/workflows/handoff.py)."""
        try:
            release = self._handoff.release(done.nodes)
        except Exception:  # noqa: BLE001 - a bad graph must not stop the worker
            self._log.exception("handing off a workflow step failed; the graph sends it")
            return
        if release is not None:
            self._queue(release)

    def _queue(self, release: Release) -> None:
        if self._release is None:
            self._release = release
        else:
            self._release.extend(release)

    def waiting(self) -> list[Delivery]:
        """The deliveries read and not started yet (the rest of the batch)."""
        return self.batch[self.batch_started:]

    def _read(self, deliveries: list[Delivery], counts: list[int] | None,
              release: Release | None) -> None:
        self.batch, self.batch_started, self.batch_read_at = deliveries, 0, time.monotonic()
        if release is not None:  # sent (kept for the next try if the read raised)
            self._release = None
            self._report_sent(release)
        self._note_levels(deliveries, counts or [self.conf.prefetch] * keys.LEVELS)

    def _note_levels(self, deliveries: list[Delivery], asked: list[int]) -> None:
        """Mark the levels where some stream gave all that was asked of it (more is waiting)."""
        per_stream: dict[tuple[str, int], int] = {}
        for skey, level, entry_id, _ in deliveries:
            per_stream[skey, level] = per_stream.get((skey, level), 0) + 1
            self._newest_ms[level] = _entry_ms(entry_id)
        full = {level for (_, level), n in per_stream.items() if n >= asked[level]}
        # a flooded level the plan gave no share this time is still flooded
        self._flooded = full | {level for level in self._flooded if asked[level] == 0}

    def _check_worn_out(self) -> None:
        """Stop (warm) to be replaced by a fresh child once this one ran ``max_tasks_per_child``
        tasks or grew past ``max_memory_per_child`` KiB (peak resident size, as Celery reads)."""
        conf = self.conf
        ran = self.processed + self.failed
        if conf.max_tasks_per_child and ran >= conf.max_tasks_per_child:
            why = f"ran {ran} tasks (max_tasks_per_child={conf.max_tasks_per_child})"
        elif conf.max_memory_per_child and _peak_rss_kib() > conf.max_memory_per_child:
            why = (f"uses {_peak_rss_kib()} KiB (max_memory_per_child="
                   f"{conf.max_memory_per_child})")
        else:
            return
        self._log.info("child will be replaced", reason=why)
        self.worn_out = self.stopping = True

    def recover_own_pending(self) -> int:
        """Run what this consumer name had fetched but not acked (a crashed predecessor's batch)."""
        total = 0
        for _ in range(10_000):  # each round acks what it read, so the PEL shrinks every time
            deliveries = self.broker.fetch(self.consumer, self.queues, self.conf.prefetch, 0,
                                           own_pending=True)
            if not deliveries:
                break
            total += len(deliveries)
            self._process_again(deliveries)
        if total:
            self._log.warning("recovered in-flight messages of a previous run", count=total)
        return total

    def reclaim(self) -> int:
        """Take over entries whose lease ran out (their worker died); poison goes to the DLQ."""
        deliveries = self.broker.reclaim(self.consumer, self.queues, self.conf.lease_ms,
                                         self.conf.prefetch)
        if deliveries:
            self._log.warning("reclaimed messages whose lease expired", count=len(deliveries))
            self.engine_counts["reclaimed"] += len(deliveries)
            self._process_again(deliveries)
        return len(deliveries)

    def _process_again(self, deliveries: list[Delivery]) -> None:
        """Run redelivered messages; their results replace any a first run may have written."""
        first = len(self._done.results)
        self.process(self._drop_poison(deliveries))
        self._done.overwrite.update(task_id for task_id, _ in self._done.results[first:])
        self.flush()

    def _drop_poison(self, deliveries: list[Delivery]) -> list[Delivery]:
        """Dead-letter entries delivered more than ``max_deliveries`` times (they keep killing
        workers); return the rest."""
        counts = self.broker.delivery_counts(deliveries)
        keep = []
        for delivery, count in zip(deliveries, counts, strict=True):
            if count > self.conf.max_deliveries:
                self.engine_counts["poison"] += 1
                self._dead_letter(delivery, f"poison: delivered {count} times without finishing "
                                  f"(max_deliveries={self.conf.max_deliveries})")
            else:
                keep.append(delivery)
        return keep

    def _leave_groups(self) -> None:
        """After a clean stop, remove this consumer from its groups if it holds nothing (else
        every restart under a new name would leave one behind in each stream)."""
        if self._done:  # outcomes not written: the entries stay pending under this name
            return
        try:
            self.broker.forget_consumer(self.consumer, self.queues)
        except TRANSIENT as exc:
            self._log.warning("could not leave the consumer groups", error=str(exc))

    def stop(self, *_args) -> None:
        self.stopping = True

    def _install_signals(self) -> None:
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the supervisor, which decides
        signal.signal(signal.SIGALRM, _on_soft_limit)

    def _with_retry(self, step) -> None:
        delay = 0.1
        failures = 0
        while True:
            try:
                step()
                if failures:
                    self._log.info("broker reachable again", after_failures=failures)
                return
            except TRANSIENT as exc:
                failures += 1
                self.engine_counts["broker_errors"] += 1
                self._interrupted = True
                if isinstance(exc, BrokerOutOfMemory):
                    self._log.warning("broker out of memory: nothing is acked until its outcome "
                                      "is written; retrying", error=str(exc), retry_in=delay)
                else:
                    self._log.warning("broker unreachable, retrying", error=str(exc),
                                      retry_in=delay)
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
                if self.stopping and not self._done:
                    return

    # -- select and execute -----------------------------------------------------------------
    def process(self, deliveries: list[Delivery]) -> None:
        """Run a fetched batch in weighted-fair priority order."""
        if deliveries is not self.batch:  # read elsewhere (recovered, reclaimed)
            self.batch_read_at = time.monotonic()
        if self._rate_gate is not None:
            self._rate_gate.new_batch()
        if len({d[1] for d in deliveries}) > 1:
            deliveries = self._order(deliveries)
        self.batch = deliveries
        release_after = self.conf.release_after_ms / 1000.0
        i = 0
        while i < len(deliveries):
            started = time.monotonic()
            done = self._done
            settled = len(done.nodes)
            self.batch_started = i + 1
            self._execute(deliveries[i])
            i += 1
            if len(done.nodes) > settled and done is self._done:  # a graph node, not yet written
                step = self._chain_step(done.nodes[-1])
                if step is not None:  # its successor: run next, in this batch
                    deliveries.insert(i, step)
            if time.monotonic() - started > release_after and i < len(deliveries):
                # A long task: the supervisor may have handed our prefetched messages to others.
                rest = deliveries[i:]
                deliveries = deliveries[:i] + [d for d in rest if d[2] is None] + \
                    self.broker.still_owned(self.consumer, [d for d in rest if d[2] is not None])
                self.batch = deliveries
        if self._async_batch:
            self._run_async_batch()

    def _chain_step(self, node: tuple[str, str, str, bytes]) -> Delivery | None:
        """The lone successor of ``node`` (just succeeded, its outcome not yet written), to run
        here next when it can: for one of this worker's queues, due now, registered here,
        synchronous, without a hard time limit (fastq/workflows/handoff.py)."""
        if not self._handoff.knows(node[1]):
            return None
        try:
            send = self._handoff.successor(node)
            if send is None:
                return None
            queue, level, due_ms, data, next_id, dag_id = send
            if due_ms or queue not in self.queues:
                return None
            msg = decode_message(data)
            task = self.tasks.get(msg.task)
            if task is None or task.is_async or msg.hard_limit_ms or \
                    self._time_limits.hard_limit_ms(msg.task):
                return None
        except Exception:  # noqa: BLE001 - a bad graph must not stop the worker
            self._log.exception("building a workflow step failed; the graph sends it")
            return None
        self._handoff.run_here(node[1], next_id)
        self._done.ran_here.append((queue, dag_id, next_id, self._handoff.marker_ttl_ms))
        if self.hooks.after_send:
            self._call_hooks((self.app.after_send,), [msg])
        return keys.stream(queue, level), level, None, data

    def _order(self, deliveries: list[Delivery]) -> list[Delivery]:
        by_level: list[list[Delivery]] = [[] for _ in range(keys.LEVELS)]
        for d in deliveries:
            by_level[d[1]].append(d)
        now = int(time.time() * 1000)
        ages = [now - _entry_ms(b[0][2]) if b else 0 for b in by_level]
        plan = plan_levels([len(b) for b in by_level], ages, self.credits,
                           self.conf.priority_weights, self.conf.priority_ageing_ms, len(deliveries))
        cursors = [0] * keys.LEVELS
        ordered = []
        for level in plan:
            ordered.append(by_level[level][cursors[level]])
            cursors[level] += 1
        return ordered

    def _execute(self, delivery: Delivery) -> None:
        """Decode, find the task, run the steps (built-in gates and middleware), run the task,
        record its outcome."""
        skey, level, entry_id, data = delivery
        if data is None:  # deleted while pending (purged): nothing to run
            self._done.ack(skey, entry_id)
            return
        try:
            msg = decode_message(data)
        except DecodeError as exc:
            self._dead_letter(delivery, f"undecodable message: {exc}")
            return
        msg.queue = self._queues.get(skey) or self._queue_of(skey)
        task = self.tasks.get(msg.task)
        if task is None:
            self._dead_letter(delivery, f"unknown task {msg.task!r}: not registered in this worker",
                              msg, NotRegistered)
            return
        self.current_stream, self.current_entry, self.current_data = skey, entry_id, data
        try:
            for gate in self._gates if self.revoked or msg.expires_ms else self._lean_gates:
                gate(task, msg)
        except SkipMessage as skip:
            self._skipped(task, msg, delivery, skip)
            return
        except DeferMessage as defer:
            self.engine_counts["deferred"] += 1
            self._done.delayed.append((keys.parse_stream(skey)[0], level, defer.due_ms, data))
            self._done.ack(skey, entry_id)
            return
        try:
            args, kwargs = unpack_body(msg.body, msg.codec, msg.compressed, self.accept_pickle)
        except DecodeError as exc:
            self._dead_letter(delivery, f"undecodable body: {exc}", msg)
            return
        if msg.options and ERRBACK in msg.options:  # called (request, exc, traceback)
            args = errback_arguments(args)
        if task.is_async:
            self._async_batch.append((task, msg, args, kwargs, delivery))
            return
        token = current_request.set(msg)
        if entry_id is not None:
            self._origin = skey, entry_id
        self._begin(msg, *self._origin)
        try:
            if msg.soft_limit_ms and self.handle_signals:
                signal.setitimer(signal.ITIMER_REAL, msg.soft_limit_ms / 1000.0)
            try:
                value = task.invoke(*args, **kwargs)
            finally:
                if msg.soft_limit_ms and self.handle_signals:
                    signal.setitimer(signal.ITIMER_REAL, 0)
        except Exception as exc:
            self._record(task, msg, delivery, exc=exc)
        else:
            self._record(task, msg, delivery, value)
        finally:
            current_request.reset(token)
            self._end()
        if time.monotonic() - self._last_flush > self.conf.flush_ms / 1000.0:
            self.flush()

    def _queue_of(self, skey: str) -> str:
        queue = self._queues[skey] = keys.parse_stream(skey)[0]
        return queue

    def _record(self, task: Task, msg: Message, delivery: Delivery, value=None,
                exc: BaseException | None = None) -> None:
        """The one place a run's outcome is recorded (sync and async tasks alike): result or
        retry or failure (and dead letter), the ack, and the hooks that watch it."""
        skey, entry_id = delivery[0], delivery[2]
        if exc is None:
            self.processed += 1
            outcome.succeeded(self._done, task, msg, value, self.threshold)
        else:
            queue = keys.parse_stream(skey)[0]
            failed = outcome.failed(self._done, task, msg, queue, exc, self.threshold,
                                    self.consumer, entry_id)
            if failed.state == states.RETRY:
                self._log.info("task will be retried", task=task.name, id=msg.id,
                               attempt=msg.attempt, error=repr(exc))
                self._call_hooks(self.hooks.on_retry, task, msg, exc, failed.countdown)
            elif failed.state in REFUSED:
                self._log.info("task refused its message", task=task.name, id=msg.id,
                               outcome=failed.state, reason=str(exc))
                if failed.dead_reason:
                    self._call_hooks(self.hooks.on_dead_letter, msg, failed.dead_reason)
            else:
                self.failed += 1
                self._log.error("task failed", task=task.name, id=msg.id, error=repr(exc))
                if failed.dead_reason:
                    self._call_hooks(self.hooks.on_dead_letter, msg, failed.dead_reason)
        self._done.ack(skey, entry_id)
        for hook in self.hooks.after_execute:  # call_hooks, inlined: this is once per task
            try:
                hook(task, msg, value, exc)
            except Exception:  # noqa: BLE001 - an observer must not break the worker
                self._log.exception("middleware hook failed", hook=hook.__qualname__)

    def _record_async(self, started: float, task: Task, msg: Message, delivery: Delivery,
                      value=None, exc: BaseException | None = None) -> None:
        """An ``async def`` run's outcome. The child's current run is this one first (its
        stream, entry, envelope and start), so the hooks time it as they time a sync run."""
        self.current_stream, _, self.current_entry, self.current_data = delivery
        self.task_started = started
        self._record(task, msg, delivery, value, exc)

    def _skipped(self, task: Task, msg: Message, delivery: Delivery, skip: SkipMessage) -> None:
        """A step said not to run it: acknowledged, with the state the step named."""
        outcome.skipped(self._done, task, msg, skip.reason, skip.state, self.threshold)
        self._done.ack(delivery[0], delivery[2])
        if self.hooks.after_execute:
            self._call_hooks(self.hooks.after_execute, task, msg, None, skip)

    def _call_hooks(self, hooks, *args) -> None:
        call_hooks(hooks, *args, log=self._log)

    def _begin(self, msg: Message, skey: str, entry_id: bytes) -> None:
        now = self.task_started = time.monotonic()  # for the hooks that time a run (metrics)
        if self.slots is not None:
            deadline = now + msg.hard_limit_ms / 1000.0 if msg.hard_limit_ms else 0.0
            self.slots.begin(self.slot, now, deadline, entry_id, skey, msg.id, now)

    def _end(self) -> None:
        if self.slots is not None:
            self.slots.end(self.slot, time.monotonic())

    def _run_async_batch(self) -> None:
        """Run the batch's ``async def`` tasks together on this child's event loop."""
        batch, self._async_batch = self._async_batch, []
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
        limit = asyncio.Semaphore(self.conf.async_concurrency)

        async def one(task, msg, args, kwargs, delivery):
            async with limit:
                current_request.set(msg)  # each asyncio task has its own context copy
                started = time.monotonic()
                try:
                    coro = task.invoke(*args, **kwargs)
                    if msg.soft_limit_ms:
                        value = await asyncio.wait_for(coro, msg.soft_limit_ms / 1000.0)
                    else:
                        value = await coro
                except TimeoutError:
                    self._record_async(started, task, msg, delivery,
                                       exc=SoftTimeLimitExceeded("soft time limit exceeded"))
                except Exception as exc:
                    self._record_async(started, task, msg, delivery, exc=exc)
                else:
                    self._record_async(started, task, msg, delivery, value)

        async def run_all():
            await asyncio.gather(*(one(*item) for item in batch))

        self._loop.run_until_complete(run_all())

    def _dead_letter(self, delivery: Delivery, reason: str, msg: Message | None = None,
                     error: type[Exception] = DeadLettered) -> None:
        """Keep a message this worker cannot run, with the reason, in the queue's DLQ stream."""
        skey, _level, entry_id, data = delivery
        queue = keys.parse_stream(skey)[0]
        self._log.error("message sent to dead-letter queue", queue=queue, reason=reason,
                        entry=entry_id)
        outcome.dead_letter(self._done, queue, data or b"", reason, msg, self.consumer, entry_id,
                            stream=skey, threshold=self.threshold, error=error)
        self._done.ack(skey, entry_id)
        self._call_hooks(self.hooks.on_dead_letter, msg, reason)

    # -- revocations ------------------------------------------------------------------------
    def _sync_revocations(self, now: float) -> None:
        """Follow the revocation stream (at most every ``revocation_sync_ms``)."""
        if now < self._next_revocation_sync:
            return
        self._next_revocation_sync = now + self.conf.revocation_sync_ms / 1000.0
        if self._revocation_cursor is None:
            self.revoked, self._revocation_cursor = self.broker.live_revocations()
            return
        self._revocation_cursor, new = self.broker.revocations_since(self._revocation_cursor)
        wall = time.time()
        for task_id, until, _terminate in new:  # terminate: the supervisor stops running ones
            self.revoked[task_id] = until
        if new and len(self.revoked) > 10_000:
            self.revoked = {k: v for k, v in self.revoked.items() if v > wall}

    # -- finish -----------------------------------------------------------------------------
    def flush(self, defer_release: bool = False) -> None:
        """Write results, retries, dead letters and acks of everything run so far in one round
        trip. On a broker error the outcomes are kept and written on the next try.

        The workflow nodes this made ready are sent right after, or with ``defer_release`` in
        the round trip of the next fetch (``run_once``'s way: no round trip of their own)."""
        if self._done:
            done = self._done
            if self.hooks.before_flush:
                self._call_hooks(self.hooks.before_flush, self, done)
            steps = self.broker.finish(done, self.result_ttl_ms)
            self._done = Finish()
            self._settled(done, steps)
        if self._release is not None and not defer_release:
            self._send_release()
        self._last_flush = time.monotonic()

    def _settled(self, done: Finish, steps: list) -> None:
        """After a round's outcomes are written: what they made ready, then ``after_flush``."""
        if steps:
            self._advance(steps)
        self._call_hooks(self._after_flush, self, done)

    def _advance(self, steps) -> None:
        """Build what the round's workflow nodes made ready, to send. Their outcomes and acks
        are written already: if sending fails, the graph's outbox keeps the nodes and a sweeper
        sends them."""
        try:
            release = to_release(self.app, steps, self._handoff)
        except Exception:  # noqa: BLE001 - a bad graph must not stop the worker
            self._log.exception("advancing a workflow failed; a sweeper will retry")
            return
        if release is not None:
            self._queue(release)

    def _send_release(self) -> None:
        release, self._release = self._release, None
        try:
            self.broker.graph_release(release)
        except TRANSIENT as exc:
            self._log.warning("could not send ready workflow nodes; a sweeper will",
                              error=str(exc))
            return
        except Exception:  # noqa: BLE001 - a bad graph must not stop the worker
            self._log.exception("sending ready workflow nodes failed; a sweeper will retry")
            return
        self._report_sent(release)

    def _report_sent(self, release: Release) -> None:
        try:
            report_sent(self.app, release)
        except Exception:  # noqa: BLE001 - an observer must not break the worker
            self._log.exception("middleware hook failed", hook="after_send")

    def _heartbeat(self, now: float) -> None:
        if now < self._next_heartbeat:
            return
        self._next_heartbeat = now + self.conf.heartbeat_s
        if self.parent_pid is not None and os.getppid() != self.parent_pid:
            self._log.warning("supervisor is gone, stopping")
            self.stopping = True
        info = msgpack.packb({"consumer": self.consumer, "pid": os.getpid(),
                              "host": socket.gethostname(), "queues": self.queues,
                              "processed": self.processed, "failed": self.failed,
                              "at": time.time()})
        self.broker.heartbeat(self.consumer, info, int(self.conf.heartbeat_s * 3000))
