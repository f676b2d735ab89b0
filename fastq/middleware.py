"""Middleware: the seams where features observe or steer a task's life (docs/architecture.md, Seams).

Subclass :class:`Middleware`, override the hooks you need, and install it with
``App(..., middleware=[m])`` or ``app.add_middleware(m)``; hooks run in install order. Every hook
is a no-op here, and only the hooks a middleware overrides are ever called (:class:`Hooks`), so an
installed middleware costs nothing at the hooks it leaves alone, and none installed costs nothing.

Where each hook fires:

- producer: ``before_send(app, message)`` for every message, singly or in a batch or map, before it
  is encoded: it may change ``message.options`` (headers) or raise to refuse the send;
  ``after_send(app, message)`` once it is sent (in a batch: when the batch is written);
- processes: ``worker_boot(worker)`` in the supervisor before it forks, ``worker_ready(worker)``
  in the supervisor once every child has entered its fetch loop, ``child_init(child)`` in
  each child as it starts (again after a restart), ``child_shutdown(child)`` as a child stops
  warm, ``worker_shutdown(worker)`` in the supervisor on its way out; ``beat_init(beat)`` as a
  beat scheduler starts (``fastq beat``, or the one a worker runs with ``-B``);
- per task, in the child: ``before_execute(task, message)`` (raise :class:`SkipMessage` to ack the
  message without running it), ``after_execute(task, message, result=None, exc=None)``,
  ``on_retry(task, message, exc, countdown)``, ``on_dead_letter(message, reason)`` (``message`` is
  None for bytes that never decoded);
- per round: ``before_flush(child, finish)`` as a round's outcomes are about to be written (what
  it adds to ``finish.events`` goes in the same round trip, written only with them);
  ``after_flush(child, finish)`` once they are written: the place for a batching consumer
  (metrics, events) to do its I/O, rather than per task; ``child_idle(child)`` as a child is
  about to wait for work (its next read will block): where a consumer that holds its I/O back
  over several rounds writes what it holds, so nothing waits on the next task.

A hook that raises (other than ``SkipMessage``/``DeferMessage`` in ``before_execute``) is logged by
the worker and does not fail the task; in the producer it refuses the send.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastq import states
from fastq.errors import FastqError, Ignore, Reject

if TYPE_CHECKING:
    from fastq.broker.base import Finish
    from fastq.message import Message

HOOKS = ("before_send", "after_send", "worker_boot", "worker_ready", "child_init",
         "child_shutdown", "worker_shutdown", "beat_init",
         "before_execute", "after_execute", "on_retry", "on_dead_letter", "before_flush",
         "after_flush", "child_idle")


class SkipMessage(FastqError):  # noqa: N818 - Dramatiq's and the issue's name
    """Raised by ``before_execute``: acknowledge the message without running the task.

    ``state`` is what the task's result says: REVOKED (the default, with ``reason`` as its
    error), FAILURE, or None to write no result at all (Celery's ``Ignore``).
    """

    def __init__(self, reason: str, state: str | None = states.REVOKED):
        super().__init__(reason)
        self.reason = reason
        self.state = state


class DeferMessage(FastqError):  # noqa: N818 - a control-flow signal, like SkipMessage
    """Raised by ``before_execute``: do not run the task now; send it again at ``due_ms`` (epoch
    ms) through the queue's delayed set, and acknowledge this delivery (how rate limits wait)."""

    def __init__(self, due_ms: int, reason: str = "deferred"):
        super().__init__(reason)
        self.due_ms = int(due_ms)
        self.reason = reason


class Middleware:
    """Base class of middleware: every hook does nothing. Override the ones you need."""

    def before_send(self, app: Any, message: Message) -> None: ...

    def after_send(self, app: Any, message: Message) -> None: ...

    def worker_boot(self, worker: Any) -> None: ...

    def worker_ready(self, worker: Any) -> None: ...

    def child_init(self, child: Any) -> None: ...

    def child_shutdown(self, child: Any) -> None: ...

    def worker_shutdown(self, worker: Any) -> None: ...

    def beat_init(self, beat: Any) -> None: ...

    def before_execute(self, task: Any, message: Message) -> None: ...

    def after_execute(self, task: Any, message: Message, result: Any = None,
                      exc: BaseException | None = None) -> None: ...

    def on_retry(self, task: Any, message: Message, exc: BaseException,
                 countdown: float) -> None: ...

    def on_dead_letter(self, message: Message | None, reason: str) -> None: ...

    def before_flush(self, child: Any, finish: Finish) -> None: ...

    def after_flush(self, child: Any, finish: Finish) -> None: ...

    def child_idle(self, child: Any) -> None: ...


class Hooks:
    """For each hook name, the bound methods of the middleware that override it, in install
    order: ``for hook in hooks.after_execute: hook(task, msg, result=value)``. An empty tuple
    when none does, so callers test ``if hooks.x:`` and pay nothing else."""

    __slots__ = HOOKS

    def __init__(self, middleware: list[Middleware]):
        for name in HOOKS:
            base = getattr(Middleware, name)
            setattr(self, name, tuple(getattr(m, name) for m in middleware
                                      if getattr(type(m), name, base) is not base))


SKIPPED = "skipped"  # run_event: a step skipped the message without REVOKED: no outcome event
IGNORED = "ignored"  # run_event: the task raised Ignore: it ran, no outcome event


def run_event(exc: BaseException | None, retried: bool) -> str:
    """The Celery event type that ends a run ``after_execute`` reports (``exc`` as given;
    ``retried``: ``on_retry`` saw this message just before), or :data:`SKIPPED` /
    :data:`IGNORED` for a run that has none."""
    if exc is None:
        return "task-succeeded"
    if isinstance(exc, SkipMessage):  # a step said no: it never started
        return "task-revoked" if exc.state == states.REVOKED else SKIPPED
    if retried:
        return "task-retried"
    if isinstance(exc, Reject):
        return "task-rejected"
    if isinstance(exc, Ignore):
        return IGNORED
    return "task-failed"


def call_hooks(hooks: tuple, *args: Any, log: Any) -> None:
    """Run worker-side hooks in order; one that raises is logged on ``log`` (a structlog logger)
    and neither fails the task nor stops the worker."""
    for hook in hooks:
        try:
            hook(*args)
        except Exception:  # noqa: BLE001 - an observer must not break the worker
            log.exception("middleware hook failed", hook=getattr(hook, "__qualname__", repr(hook)))


__all__ = ["DeferMessage", "HOOKS", "Hooks", "IGNORED", "Middleware", "SKIPPED", "SkipMessage",
           "call_hooks", "run_event"]
