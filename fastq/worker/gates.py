"""The worker's built-in steps before a task runs, as middleware: revoked, expired, time limits
set by remote control, rate limited.

A child runs them, in this order, ahead of the installed middleware's ``before_execute`` hooks
(fastq/worker/child.py ``Child._gates``). A step that says no raises :class:`SkipMessage` (the
message is acknowledged with the state it names) or :class:`DeferMessage` (it comes back later
through the delayed set). Messages that never decode, and tasks this worker does not know, are
dead-lettered before any step runs: there is no task to hand a step. :class:`Revoked` and
:class:`Expired` can only say no while a revocation is in force or when the message has an
``expires``; otherwise the child runs the list without them (the no-op calls cost ~3% of a no-op
task's whole run).
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING

import structlog

from fastq import keys
from fastq.middleware import DeferMessage, Middleware, SkipMessage
from fastq.ratelimit import RateLimiter, parse_rate

if TYPE_CHECKING:
    from fastq.message import Message
    from fastq.task import Task
    from fastq.worker.child import Child

log = structlog.get_logger("fastq.worker")


class Revoked(Middleware):
    """A revoked task is not run: REVOKED. The child keeps the revocations in force."""

    def __init__(self, child: Child):
        self.child = child

    def before_execute(self, task: Task, message: Message) -> None:
        revoked = self.child.revoked
        if revoked and message.id in revoked:
            raise SkipMessage("revoked")


class Expired(Middleware):
    """A message past its ``expires`` is not run: REVOKED with the reason "expired"."""

    def before_execute(self, task: Task, message: Message) -> None:
        if message.expires_ms and time.time() * 1000 > message.expires_ms:
            log.info("task expired, not run", task=message.task, id=message.id)
            raise SkipMessage("expired")


class TunedTimeLimits(Middleware):
    """Time limits set by ``app.control.time_limit`` (fastq/worker/tuning.py) replace the ones
    the message carries (the producer's defaults, or what ``apply_async`` gave)."""

    def __init__(self, limits: dict[str, tuple[int, int]]):
        self.limits = limits  # task name -> (soft ms, hard ms), 0: none

    def before_execute(self, task: Task, message: Message) -> None:
        limits = self.limits.get(message.task)
        if limits is not None:
            message.soft_limit_ms, message.hard_limit_ms = limits

    def hard_limit_ms(self, task_name: str) -> int:
        return self.limits.get(task_name, (0, 0))[1]


class RateLimited(Middleware):
    """Take a token from the task's and the queue's global bucket; without one, the message goes
    back to the delayed set until the next token is due (no worker waits on it).

    Once a bucket has said no in a batch, the rest of the batch queues up behind it a token
    interval apart without asking again (:meth:`new_batch` forgets that): else a backlog would
    cycle through the delayed set every few ms (100 Redis calls per task)."""

    def __init__(self, child: Child):
        self.child = child
        self.limiter = RateLimiter(child.broker)
        self.queue_rates = {q: parse_rate(r) for q, r in child.conf.queue_rate_limits.items()}
        self.burst_s = child.conf.rate_burst_s
        self._denied: dict[str, float] = {}  # bucket -> epoch ms of its next free slot

    @staticmethod
    def wanted(child: Child) -> bool:
        """Only a worker with a rate limit somewhere pays for this step."""
        return bool(child.conf.queue_rate_limits) or any(t.rate for t in child.tasks.values())

    def new_batch(self) -> None:
        self._denied.clear()

    def before_execute(self, task: Task, message: Message) -> None:
        queue = message.queue  # set by the child from the stream it read the message from
        queue_rate = self.queue_rates.get(queue) if self.queue_rates else None
        if not (task.rate or queue_rate):
            return
        buckets = []
        if task.rate:
            buckets.append((keys.rate_task(task.name), task.rate))
        if queue_rate:
            buckets.append((keys.rate_queue(queue), queue_rate))
        for key, rate in buckets:
            due_ms = self._denied.get(key)
            if due_ms is None:
                granted, wait_ms = self.limiter.acquire(key, rate, burst_s=self.burst_s)
                if granted:
                    continue
                due_ms = time.time() * 1000 + max(wait_ms, 1)
            self._denied[key] = due_ms + 1000.0 / rate
            raise DeferMessage(int(due_ms), "rate limited")
