"""One worker child: fetch -> select -> execute -> finish, top to bottom.

Each child is its own consumer in the ``fastq`` group with a stable name (``worker:slot``), talks to
the broker itself, and on start first re-reads its own pending entries, so a child restarted after a
crash picks up what its predecessor had in flight straight away.
"""
from __future__ import annotations

import asyncio
import os
import signal
import socket
import time
from typing import TYPE_CHECKING

import msgpack
import redis
import structlog

from fastq import keys
from fastq._core import decode_message, plan_levels, unpack_body
from fastq.broker.base import Delivery, Finish
from fastq.errors import DecodeError
from fastq.result import exception_record, success_record

if TYPE_CHECKING:
    from fastq.app import App
    from fastq.broker import Broker
    from fastq.message import Message
    from fastq.task import Task

log = structlog.get_logger("fastq.worker")
TRANSIENT = (redis.ConnectionError, redis.TimeoutError, ConnectionError, TimeoutError)


def _entry_ms(entry_id: bytes) -> int:
    return int(entry_id[:entry_id.index(b"-")]) if isinstance(entry_id, bytes) else 0


class Child:
    """Runs tasks from ``queues`` until :meth:`stop` (warm: the current batch is finished and acked)."""

    def __init__(self, app: App, consumer: str, queues: list[str], broker: Broker | None = None,
                 parent_pid: int | None = None, handle_signals: bool = True):
        self.app = app
        self.handle_signals = handle_signals  # False in a non-main thread (fastq.testing)
        self.parent_pid = parent_pid  # stop (warm) when this process is no longer our parent
        self.conf = app.conf
        self.consumer = consumer
        self.queues = queues
        self.broker = broker or app.broker
        self.tasks = app.tasks
        self.accept_pickle = "pickle" in self.conf.accept_content
        self.result_ttl_ms = int(self.conf.result_expires * 1000)
        self.credits = [0.0] * keys.LEVELS
        self.processed = 0
        self.failed = 0
        self.stopping = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._async_batch: list[tuple[Task, Message, tuple, dict, Delivery]] = []
        self._done = Finish()
        self._last_flush = time.monotonic()
        self._next_heartbeat = 0.0
        self._log = log.bind(consumer=consumer)

    # -- the loop ---------------------------------------------------------------------------
    def run(self) -> None:
        """Serve until stopped. Broker outages are retried with backoff, never fatal."""
        if self.handle_signals:
            self._install_signals()
        self._log.info("child ready", pid=os.getpid(), queues=self.queues)
        self._with_retry(lambda: self.broker.prepare(self.queues))
        self._with_retry(self.recover_own_pending)
        while not self.stopping:
            self._with_retry(lambda: self.run_once(self.conf.block_ms))
        self._with_retry(self.flush)
        self._log.info("child stopped", processed=self.processed)

    def run_once(self, block_ms: int) -> int:
        """One round: fetch a batch (blocking up to ``block_ms``), run it, write its outcomes."""
        self._heartbeat()
        deliveries = self.broker.fetch(self.consumer, self.queues, self.conf.prefetch, block_ms)
        if deliveries:
            self.process(deliveries)
        self.flush()
        return len(deliveries)

    def recover_own_pending(self) -> int:
        """Run what this consumer name had fetched but not acked (a crashed predecessor's batch)."""
        total = 0
        for _ in range(10_000):  # each round acks what it read, so the PEL shrinks every time
            deliveries = self.broker.fetch(self.consumer, self.queues, self.conf.prefetch, 0,
                                           own_pending=True)
            if not deliveries:
                break
            total += len(deliveries)
            self.process(deliveries)
            self.flush()
        if total:
            self._log.warning("recovered in-flight messages of a previous run", count=total)
        return total

    def stop(self, *_args) -> None:
        self.stopping = True

    def _install_signals(self) -> None:
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the supervisor, which decides

    def _with_retry(self, step) -> None:
        delay = 0.1
        while True:
            try:
                step()
                return
            except TRANSIENT as exc:
                self._log.warning("broker unreachable, retrying", error=str(exc), retry_in=delay)
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
                if self.stopping and not self._done:
                    return

    # -- select and execute -----------------------------------------------------------------
    def process(self, deliveries: list[Delivery]) -> None:
        """Run a fetched batch in weighted-fair priority order."""
        levels = {d[1] for d in deliveries}
        if len(levels) > 1:
            deliveries = self._order(deliveries)
        execute = self._execute
        for delivery in deliveries:
            execute(delivery)
        if self._async_batch:
            self._run_async_batch()

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
        skey, _level, entry_id, data = delivery
        done = self._done
        if data is None:  # deleted while pending (purged): nothing to run
            done.ack(skey, entry_id)
            return
        try:
            msg = decode_message(data)
        except DecodeError as exc:
            self._dead_letter(delivery, f"undecodable message: {exc}")
            return
        task = self.tasks.get(msg.task)
        if task is None:
            self._dead_letter(delivery, f"unknown task {msg.task!r}: not registered in this worker",
                              msg)
            return
        try:
            args, kwargs = unpack_body(msg.body, msg.codec, msg.compressed, self.accept_pickle)
        except DecodeError as exc:
            self._dead_letter(delivery, f"undecodable body: {exc}", msg)
            return
        if task.is_async:
            self._async_batch.append((task, msg, args, kwargs, delivery))
            return
        task.request = msg
        try:
            value = task.fn(task, *args, **kwargs) if task.bind else task.fn(*args, **kwargs)
        except Exception as exc:
            self._record_failure(task, msg, exc)
        else:
            self.processed += 1
            if not task.ignore_result:
                done.results.append((msg.id, success_record(value, task.name, msg.codec,
                                                            self.conf.compress_threshold)))
        done.ack(skey, entry_id)
        if time.monotonic() - self._last_flush > self.conf.flush_ms / 1000.0:
            self.flush()

    def _record_failure(self, task: Task, msg: Message, exc: BaseException) -> None:
        self.failed += 1
        self._log.error("task failed", task=task.name, id=msg.id, error=repr(exc))
        if not task.ignore_result:
            self._done.results.append((msg.id, exception_record(exc, task.name, msg.codec,
                                                                self.conf.compress_threshold)))

    def _run_async_batch(self) -> None:
        """Run the batch's ``async def`` tasks together on this child's event loop."""
        batch, self._async_batch = self._async_batch, []
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
        limit = asyncio.Semaphore(self.conf.async_concurrency)

        async def one(task, msg, args, kwargs, delivery):
            async with limit:
                try:
                    coro = task.fn(task, *args, **kwargs) if task.bind else task.fn(*args, **kwargs)
                    value = await coro
                except Exception as exc:
                    self._record_failure(task, msg, exc)
                else:
                    self.processed += 1
                    if not task.ignore_result:
                        self._done.results.append(
                            (msg.id, success_record(value, task.name, msg.codec,
                                                    self.conf.compress_threshold)))
            self._done.ack(delivery[0], delivery[2])

        async def run_all():
            await asyncio.gather(*(one(*item) for item in batch))

        self._loop.run_until_complete(run_all())

    def _dead_letter(self, delivery: Delivery, reason: str, msg: Message | None = None) -> None:
        """Keep a message this worker cannot run, with the reason, in the queue's DLQ stream."""
        skey, _level, entry_id, data = delivery
        queue = keys.parse_stream(skey)[0]
        self._log.error("message sent to dead-letter queue", queue=queue, reason=reason,
                        entry=entry_id)
        self._done.dead.append((queue, {
            "m": data or b"", "reason": reason, "task": msg.task if msg else "",
            "id": msg.id if msg else "", "stream": skey, "entry": entry_id,
            "failed_at": str(int(time.time() * 1000)), "consumer": self.consumer}))
        self._done.ack(skey, entry_id)

    # -- finish -----------------------------------------------------------------------------
    def flush(self) -> None:
        """Write results, dead letters and acks of everything run so far in one round trip."""
        if self._done:
            self.broker.finish(self._done, self.result_ttl_ms)
            self._done = Finish()
        self._last_flush = time.monotonic()

    def _heartbeat(self) -> None:
        now = time.monotonic()
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
