"""Celery's signals (``from celery.signals import task_prerun``), fired from fastq's middleware hooks.

``@task_prerun.connect`` / ``task_prerun.connect(handler, sender=...)`` as in Celery; handlers get
``signal`` and ``sender`` plus Celery's keyword arguments for that signal. A task signal's
``sender`` filter may be the task object or its name.

They cost nothing until connected: :func:`signal_middleware` gives a Celery app a middleware that
overrides only the hooks whose signals have receivers (fastq's ``Hooks`` call nothing else), and the
app builds it again whenever a receiver is connected.
"""
from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from typing import Any

from fastq import states
from fastq.compat.task import args_of
from fastq.errors import Reject
from fastq.middleware import Middleware, SkipMessage

log = logging.getLogger("fastq.compat.signals")
_version = [0]  # bumped on every connect/disconnect: apps rebuild their signal middleware


class Signal:
    """A named signal with receivers (Celery's ``celery.utils.dispatch.Signal``)."""

    def __init__(self, name: str, providing_args: Any = None):
        self.name = name
        self.receivers: list[tuple[Any, Any, Callable]] = []  # (dispatch key, sender, receiver)

    def __repr__(self) -> str:
        return f"<Signal: {self.name}>"

    def connect(self, receiver: Callable | None = None, sender: Any = None, weak: bool = True,
                dispatch_uid: Any = None, **_celery_opts: Any) -> Any:
        """Connect ``receiver``; as a decorator ``@sig.connect`` or ``@sig.connect(sender=x)``."""
        def register(fn: Callable) -> Callable:
            key = (dispatch_uid or id(fn), _sender_key(sender))
            if not any(k == key for k, _s, _r in self.receivers):
                self.receivers.append((key, sender, fn))
                _version[0] += 1
            return fn

        return register(receiver) if receiver is not None else register

    def disconnect(self, receiver: Callable | None = None, sender: Any = None, weak: bool = True,
                   dispatch_uid: Any = None) -> bool:
        key = (dispatch_uid or id(receiver), _sender_key(sender))
        before = len(self.receivers)
        self.receivers = [r for r in self.receivers if r[0] != key]
        _version[0] += 1
        return len(self.receivers) != before

    def send(self, sender: Any, **named: Any) -> list[tuple[Callable, Any]]:
        """Call every receiver whose sender filter matches; one that raises is logged and its
        exception returned in its place (Celery's ``send`` behaves the same since 4.0)."""
        out = []
        for _key, wanted, fn in self.receivers:
            if wanted is not None and not _matches(wanted, sender):
                continue
            try:
                out.append((fn, fn(signal=self, sender=sender, **named)))
            except Exception as exc:  # noqa: BLE001 - a receiver must not break the sender
                log.exception("signal handler %r for %s raised", fn, self.name)
                out.append((fn, exc))
        return out

    send_robust = send


def _sender_key(sender: Any) -> Any:
    return None if sender is None else getattr(sender, "name", None) or id(sender)


def _matches(wanted: Any, sender: Any) -> bool:
    if wanted is sender:
        return True
    name = getattr(sender, "name", sender)
    return isinstance(name, str) and getattr(wanted, "name", wanted) == name


# -- Celery's signals ------------------------------------------------------------------------
before_task_publish = Signal("before_task_publish")
after_task_publish = Signal("after_task_publish")
task_received = Signal("task_received")
task_prerun = Signal("task_prerun")
task_postrun = Signal("task_postrun")
task_success = Signal("task_success")
task_failure = Signal("task_failure")
task_retry = Signal("task_retry")
task_revoked = Signal("task_revoked")
task_rejected = Signal("task_rejected")
task_unknown = Signal("task_unknown")
task_internal_error = Signal("task_internal_error")
worker_init = Signal("worker_init")
worker_ready = Signal("worker_ready")
worker_shutting_down = Signal("worker_shutting_down")
worker_shutdown = Signal("worker_shutdown")
worker_process_init = Signal("worker_process_init")
worker_process_shutdown = Signal("worker_process_shutdown")
beat_init = Signal("beat_init")
beat_embedded_init = Signal("beat_embedded_init")
setup_logging = Signal("setup_logging")
after_setup_logger = Signal("after_setup_logger")
after_setup_task_logger = Signal("after_setup_task_logger")
celeryd_init = Signal("celeryd_init")
celeryd_after_setup = Signal("celeryd_after_setup")
import_modules = Signal("import_modules")


def version() -> int:
    return _version[0]


# -- what the hooks pass ---------------------------------------------------------------------
def _headers(msg: Any) -> dict:
    """Celery's protocol-2 headers, as far as fastq's envelope has them."""
    return {"lang": "py", "task": msg.task, "id": msg.id, "root_id": msg.root_id or msg.id,
            "parent_id": msg.parent_id, "group": msg.group_id, "retries": msg.attempt,
            "eta": msg.eta_ms or None, "expires": msg.expires_ms or None,
            "timelimit": [msg.hard_limit_ms / 1000 or None, msg.soft_limit_ms / 1000 or None],
            **{k: v for k, v in msg.options.items() if isinstance(k, str)}}


def _einfo(exc: BaseException) -> Any:
    from fastq.compat.result import ExceptionInfo

    return ExceptionInfo((type(exc), exc, exc.__traceback__))


class SignalHooks(Middleware):
    """Every hook that maps to a signal; :func:`signal_middleware` keeps only those connected."""

    def __init__(self, app: Any):
        self.app = app
        self._retried: set[str] = set()
        self._child: Any = None

    # producer
    def before_send(self, app: Any, message: Any) -> None:
        args, kwargs = args_of(message)
        before_task_publish.send(sender=message.task, body=(args, kwargs, {}), exchange="",
                                 routing_key=message.queue, headers=_headers(message), properties={},
                                 declare=[], retry_policy=None)

    def after_send(self, app: Any, message: Any) -> None:
        args, kwargs = args_of(message)
        after_task_publish.send(sender=message.task, body=(args, kwargs, {}), exchange="",
                                routing_key=message.queue, headers=_headers(message))

    # processes
    def worker_boot(self, worker: Any) -> None:
        celeryd_init.send(sender=worker.name, instance=worker, conf=self.app.conf, options={})
        worker_init.send(sender=worker)

    def worker_ready(self, worker: Any) -> None:
        worker_ready.send(sender=worker)

    def beat_init(self, beat: Any) -> None:
        beat_init.send(sender=beat)

    def child_init(self, child: Any) -> None:
        self._child = child
        worker_process_init.send(sender=None)

    def child_shutdown(self, child: Any) -> None:
        worker_process_shutdown.send(sender=None, pid=os.getpid(), exitcode=0)

    def worker_shutdown(self, worker: Any) -> None:
        worker_shutting_down.send(sender=worker.name, sig="SIGTERM", how="Warm", exitcode=0)
        worker_shutdown.send(sender=worker)

    # per task
    def before_execute(self, task: Any, message: Any) -> None:
        if task_received.receivers:
            task_received.send(sender=self._child, request=task.request_for(message))
        if task_prerun.receivers:
            args, kwargs = args_of(message)
            task_prerun.send(sender=task, task_id=message.id, task=task, args=args,
                             kwargs=kwargs)

    def on_retry(self, task: Any, message: Any, exc: BaseException, countdown: float) -> None:
        self._retried.add(message.id)
        task_retry.send(sender=task, request=task.request_for(message), reason=exc,
                        einfo=_einfo(exc))

    def after_execute(self, task: Any, message: Any, result: Any = None,
                      exc: BaseException | None = None) -> None:
        retried = message.id in self._retried
        if retried:
            self._retried.discard(message.id)
        if isinstance(exc, SkipMessage):  # a revoked or expired message: it did not run
            if exc.state == states.REVOKED:
                task_revoked.send(sender=task, request=task.request_for(message),
                                  terminated=False, signum=None,
                                  expired="expired" in exc.reason)
            return
        if exc is None:
            state = states.SUCCESS
            task_success.send(sender=task, result=result)
        elif retried:
            state = states.RETRY
        elif isinstance(exc, Reject):
            state = states.REJECTED
        else:
            state = states.FAILURE
        failing = state == states.FAILURE and task_failure.receivers
        if not (failing or task_postrun.receivers):
            return
        args, kwargs = args_of(message)  # decoded once for both
        if failing:
            task_failure.send(sender=task, task_id=message.id, exception=exc, args=args,
                              kwargs=kwargs, traceback=exc.__traceback__, einfo=_einfo(exc))
        if task_postrun.receivers:
            task_postrun.send(sender=task, task_id=message.id, task=task, args=args,
                              kwargs=kwargs, retval=result if exc is None else exc, state=state)

    def on_dead_letter(self, message: Any, reason: str) -> None:
        if message is None:
            task_rejected.send(sender=None, message=None, exc=ValueError(reason))
        elif reason.startswith("unknown task"):
            from fastq.errors import NotRegistered

            task_unknown.send(sender=None, name=message.task, id=message.id, message=message,
                              exc=NotRegistered(reason))


# hook -> the signals that need it
_HOOK_SIGNALS: dict[str, tuple[Signal, ...]] = {
    "before_send": (before_task_publish,),
    "after_send": (after_task_publish,),
    "worker_boot": (celeryd_init, worker_init),
    "worker_ready": (worker_ready,),
    "child_init": (worker_process_init, task_received),
    "child_shutdown": (worker_process_shutdown,),
    "worker_shutdown": (worker_shutting_down, worker_shutdown),
    "beat_init": (beat_init,),
    "before_execute": (task_received, task_prerun),
    "on_retry": (task_retry, task_postrun, task_failure),
    "after_execute": (task_success, task_failure, task_postrun, task_revoked, task_retry),
    "on_dead_letter": (task_rejected, task_unknown),
}


def signal_middleware(app: Any) -> Middleware | None:
    """A middleware overriding only the hooks whose signals have receivers now (None if none)."""
    wanted = {hook: getattr(SignalHooks, hook) for hook, sigs in _HOOK_SIGNALS.items()
              if any(s.receivers for s in sigs)}
    if not wanted:
        return None
    cls = type("ConnectedSignals", (Middleware,), {"__init__": SignalHooks.__init__, **wanted})
    return cls(app)


__all__ = [name for name, v in vars(sys.modules[__name__]).items() if isinstance(v, Signal)] + [
    "Signal", "signal_middleware"]
