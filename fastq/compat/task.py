"""Celery's ``Task``: its options, ``self.request``, the hooks of a custom base class, eager runs.

A ``CeleryTask`` is a :class:`fastq.Task` that also takes Celery's spellings (0..9 priorities,
``routing_key``, ``headers``, producer ``retry_policy`` ...), reads the defaults that Celery keeps in
``app.conf`` (``task_time_limit``, ``task_annotations`` ...) and runs eagerly when
``task_always_eager`` is on. Options may also be class attributes of a base class, as in Celery.
"""
from __future__ import annotations

import contextvars
import inspect
import os
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from fastq import states
from fastq._core import unpack_body
from fastq.errors import BrokerUnavailable
from fastq.message import Message
from fastq.middleware import Middleware
from fastq.result import EagerResult
from fastq.retry import Retry
from fastq.task import Task, current_request, eager_run

if TYPE_CHECKING:
    from fastq.app import App

# Options Celery lets a base class set as attributes; fastq's Task takes them as arguments.
CLASS_OPTIONS = ("queue", "priority", "ignore_result", "serializer", "max_retries",
                 "default_retry_delay", "autoretry_for", "dont_autoretry_for", "retry_backoff",
                 "retry_backoff_max", "retry_jitter", "retry_kwargs", "soft_time_limit",
                 "time_limit", "rate_limit", "expires", "acks_late", "reject_on_worker_lost",
                 "track_started", "typing", "throws", "pydantic")
# Options accepted for Celery's sake that change nothing in fastq (docs/migrating-from-celery.md).
ACCEPTED = ("acks_late", "reject_on_worker_lost", "throws", "shared", "lazy", "store_errors_even_if_ignored",
            "send_events", "trail", "resultrepr_maxsize", "abstract", "request_stack", "backend",
            "store_eager_result", "acks_on_failure_or_timeout")
HOOK_METHODS = ("before_start", "on_success", "on_failure", "on_retry", "after_return")
DEFAULT_PUBLISH_RETRY = {"max_retries": 3, "interval_start": 0.0, "interval_step": 0.2,
                         "interval_max": 0.2}

_child: list[Any] = [None]  # the worker child of this process (set by ChildTracker)
# a task called directly (``task(...)``): (task, args, kwargs), for its ``self.request``
_direct: contextvars.ContextVar[tuple | None] = contextvars.ContextVar("fastq_direct", default=None)
# the task whose overridden ``__call__`` the worker is running (not a direct call)
_calling: contextvars.ContextVar[Any] = contextvars.ContextVar("fastq_calling", default=None)


def celery_priority(priority: int | str | None) -> int | str | None:
    """A Celery integer priority (0 highest .. 9 lowest) to a fastq level (0..4): two by two."""
    if isinstance(priority, int) and not isinstance(priority, bool):
        if not 0 <= priority <= 9:
            raise ValueError(f"unknown priority {priority!r}: Celery priorities are 0 (highest) .. 9")
        return priority // 2
    return priority


class Request:
    """Celery's ``self.request`` (its ``Context``) for one message, built when asked for."""

    def __init__(self, msg: Message | None, task: CeleryTask, eager: bool = False,
                 direct: tuple[tuple, dict] | None = None):
        self._msg = msg
        self._task = task
        self.is_eager = eager
        self.called_directly = msg is None
        self._call: tuple[tuple, dict] | None = direct

    def __repr__(self) -> str:
        return f"<Context: {vars(self) if self._msg is None else self.id}>"

    def _args(self) -> tuple[tuple, dict]:
        if self._call is None:
            self._call = args_of(self._msg) if self._msg is not None else ((), {})
        return self._call

    def _field(self, name: str, default: Any = None) -> Any:
        return getattr(self._msg, name) if self._msg is not None else default

    id = property(lambda self: self._field("id"))
    task = property(lambda self: self._task.name if self._msg is not None else None)
    retries = property(lambda self: self._field("attempt", 0))
    root_id = property(lambda self: self._field("root_id") or self._field("id"))
    parent_id = property(lambda self: self._field("parent_id"))
    group = property(lambda self: self._field("group_id"))
    eta = property(lambda self: _iso(self._field("eta_ms", 0)))
    expires = property(lambda self: _iso(self._field("expires_ms", 0)))
    headers = property(lambda self: dict(self._field("options") or {}))
    correlation_id = id

    @property
    def args(self) -> tuple | None:
        return self._args()[0] if self._msg is not None or self._call else None

    @property
    def kwargs(self) -> dict | None:
        return self._args()[1] if self._msg is not None or self._call else None

    @property
    def timelimit(self) -> tuple:
        msg = self._msg
        if msg is None:
            return (None, None)
        return (msg.hard_limit_ms / 1000 or None, msg.soft_limit_ms / 1000 or None)

    @property
    def hostname(self) -> str | None:
        if self._msg is None:  # called directly
            return None
        child = _child[0]
        if child is None or self.is_eager:
            return socket.gethostname()
        return child.consumer.rpartition(":")[0] or child.consumer

    @property
    def delivery_info(self) -> dict:
        msg = self._msg
        queue = msg.queue or None if msg is not None and not self.is_eager else None
        return {"exchange": "", "routing_key": queue, "priority": msg.priority if msg else None,
                "redelivered": False, "is_eager": self.is_eager}

    def get(self, key: str, default: Any = None) -> Any:
        return getattr(self, key, default)

    def __getattr__(self, name: str) -> Any:  # a custom header, as Celery merges them in
        options = self._msg.options if self._msg is not None else {}
        if name in options:
            return options[name]
        raise AttributeError(name)


def _iso(ms: int) -> str | None:
    if not ms:
        return None
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ms / 1000, UTC).isoformat()


class CeleryTask(Task):
    """A Task as Celery users write them (``from fastq.compat import Task`` to subclass it)."""

    typing = True  # Celery checks a call's arguments against the signature when it is sent

    def __init__(self, app: App, fn: Callable, name: str, **options: Any):
        for option in CLASS_OPTIONS:  # a base class's attributes are defaults, as in Celery
            if option not in options and option in _class_options(type(self)):
                options[option] = getattr(type(self), option)
        self._given = dict(options)  # explicit options, before app.conf's defaults
        self._build(app, fn, name, options)

    def _build(self, app: App, fn: Callable, name: str, options: dict[str, Any]) -> None:
        options = {**_conf_defaults(app, name), **options}
        self._options = dict(options)  # as given: Celery's task attributes read them back
        self.track_started = bool(options.pop("track_started", False))
        self.typing = bool(options.pop("typing", type(self).typing))
        self.pydantic = bool(options.pop("pydantic", False))
        if self.pydantic:  # Celery 5.5: arguments converted in the worker, models dumped
            options.setdefault("typed", "run")
        for celery_only in ("pydantic_strict", "pydantic_context", "pydantic_dump_kwargs"):
            options.pop(celery_only, None)
        retry_kwargs = dict(options.pop("retry_kwargs", None) or {})
        if "max_retries" in retry_kwargs:
            options["max_retries"] = retry_kwargs.pop("max_retries")
        if "countdown" in retry_kwargs:
            options["default_retry_delay"] = retry_kwargs.pop("countdown")
        if options.get("max_retries", 0) is None:  # Celery: None retries forever
            options["max_retries"] = 2 ** 31
        for ignored in ACCEPTED:
            options.pop(ignored, None)
        options["priority"] = celery_priority(options.get("priority"))
        if options["priority"] is None:
            del options["priority"]
        super().__init__(app, fn, name, **options)
        self._signature = None
        self._run = self.invoke
        if type(self).__call__ is not CeleryTask.__call__:  # a base class wraps every run
            self.invoke = self._overridden_call

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run the task here; ``self.request`` is a direct call's (``called_directly``)."""
        if _calling.get() is self:  # the worker runs it through an overridden __call__
            token = _calling.set(None)  # what it calls from inside is called directly
            try:
                return self._run(*args, **kwargs)
            finally:
                _calling.reset(token)
        direct = _direct.set((self, args, kwargs))
        try:
            return self._run(*args, **kwargs)
        finally:
            _direct.reset(direct)

    def _overridden_call(self, *args: Any, **kwargs: Any) -> Any:
        token = _calling.set(self)
        try:
            return type(self).__call__(self, *args, **kwargs)
        finally:
            _calling.reset(token)

    # Celery's task attributes: the option as given, else what fastq makes of its default
    max_retries = property(lambda self: self._options.get("max_retries",
                                                          self.retry_policy.max_retries))
    default_retry_delay = property(lambda self: self._options.get("default_retry_delay",
                                                                  self.retry_policy.delay))
    autoretry_for = property(lambda self: self._options.get("autoretry_for",
                                                            self.retry_policy.retry_for))
    dont_autoretry_for = property(lambda self: self.retry_policy.dont_retry_for)
    retry_backoff = property(lambda self: self._options.get("retry_backoff", False))
    retry_backoff_max = property(lambda self: self._options.get("retry_backoff_max",
                                                                self.retry_policy.backoff_max))
    retry_jitter = property(lambda self: self.retry_policy.jitter)
    soft_time_limit = property(lambda self: self._options.get("soft_time_limit"))
    time_limit = property(lambda self: self._options.get("time_limit"))
    acks_late = True  # fastq acknowledges after the task ran
    reject_on_worker_lost = True  # a lost child's message is delivered again

    def map(self, it: Any) -> Any:  # type: ignore[override]
        """Celery's ``task.map(items)``: a signature of one task running this one per item."""
        from fastq.compat.canvas import xmap

        return xmap(self, it)

    def starmap(self, it: Any) -> Any:  # type: ignore[override]
        from fastq.compat.canvas import xstarmap

        return xstarmap(self, it)

    def reconfigure(self) -> None:
        """Apply ``app.conf``'s task defaults and annotations again (they changed)."""
        self._build(self.app, self.fn, self.name, dict(self._given))

    # -- the request ------------------------------------------------------------------------
    @property
    def request(self) -> Request:  # type: ignore[override]
        return self.request_for(current_request.get())

    def request_for(self, msg: Message | None) -> Request:
        direct = _direct.get()
        if direct is not None and direct[0] is self:
            return Request(None, self, direct=direct[1:])
        return Request(msg, self, eager=eager_run.get())

    def retry(self, args: Any = None, kwargs: Any = None, exc: BaseException | None = None,
              throw: bool = True, eta: Any = None, countdown: float | None = None,
              max_retries: int | None = None, **options: Any):
        """Celery's ``self.retry(exc=..., countdown=..., eta=..., max_retries=...)``."""
        if eta is not None and countdown is None:
            from fastq.task import _epoch_ms

            countdown = max(0.0, (_epoch_ms("eta", eta) - time.time() * 1000) / 1000)
        return super().retry(exc=exc, countdown=countdown, max_retries=max_retries)

    # -- sending ----------------------------------------------------------------------------
    def apply_async(self, args=None, kwargs=None, *, priority: int | str | None = None,
                    routing_key: str | None = None, queue: Any = None,
                    retry: bool | None = None, retry_policy: dict | None = None,
                    **options: Any):
        conf = self.app.conf
        if self.typing:
            self._check_call(args, kwargs)
        if conf.get("task_always_eager"):
            return self.apply(args, kwargs, task_id=options.get("task_id"),
                              throw=bool(conf.get("task_eager_propagates")))
        for ignored in ("exchange", "shadow", "compression", "add_to_parent",
                        "delivery_mode", "mandatory", "immediate", "reply_to", "chord",
                        "stamped_headers", "stamps", "publisher", "connection", "producer",
                        "exchange_type", "declare", "group_id", "group_index", "root_id",
                        "parent_id", "result_cls", "chain", "router", "route_name"):
            options.pop(ignored, None)
        if isinstance(queue, dict) or hasattr(queue, "name"):  # a kombu Queue or a route dict
            queue = queue.get("name") if isinstance(queue, dict) else queue.name
        queue = queue or routing_key or None
        send = super().apply_async
        call = dict(options, priority=celery_priority(priority), queue=queue)
        if retry is False or (retry is None and not conf.get("task_publish_retry", True)):
            return send(args, kwargs, **call)
        policy = {**DEFAULT_PUBLISH_RETRY, **(conf.get("task_publish_retry_policy") or {}),
                  **(retry_policy or {})}
        attempt = 0
        while True:
            try:
                return send(args, kwargs, **call)
            except BrokerUnavailable:
                if attempt >= int(policy["max_retries"] or 0):
                    raise
                time.sleep(min(policy["interval_start"] + attempt * policy["interval_step"],
                               policy["interval_max"]))
                attempt += 1

    def _check_call(self, args: Any, kwargs: Any) -> None:
        """Celery's ``typing``: a call that does not fit the function fails when sent."""
        if self._signature is None:
            try:
                self._signature = inspect.signature(self.invoke)
            except (TypeError, ValueError):
                self._signature = False
        if self._signature:
            try:
                self._signature.bind(*(args or ()), **(kwargs or {}))
            except TypeError as exc:
                raise TypeError(f"{self.name}: {exc}") from None

    def apply(self, args=None, kwargs=None, *, task_id: str | None = None, throw: bool | None = None,
              retries: int = 0, **options: Any):
        """Run here and now: ``EagerResult``; with ``task_eager_propagates`` (or ``throw``) the
        exception is raised. A custom base class's hooks run as they would in a worker.

        A retry runs at once, inside the run that asked for it, and that run's outcome is RETRY
        (raising ``Retry`` when propagating), as in Celery."""
        if throw is None:
            throw = bool(self.app.conf.get("task_eager_propagates"))
        args, kwargs = tuple(args or ()), dict(kwargs or {})
        hooked = overrides_hooks(type(self))
        if hooked:
            self.before_start(task_id, args, kwargs)
        result = super().apply(args, kwargs, task_id=task_id, throw=False, retries=retries,
                               retry_inline=False)
        raised = result.raised
        if raised is not None and self._retries_now(raised, Message(result.id, self.name,
                                                                     attempt=retries)):
            again = self.apply(args, kwargs, task_id=result.id, throw=False, retries=retries + 1)
            if again.state == states.SUCCESS or again.state == states.RETRY:
                retry = raised if isinstance(raised, Retry) else Retry(raised)
                result = EagerResult(result.id, None, states.RETRY, result.traceback, self.app,
                                     retry, raised=retry)
            else:
                result = again
        if hooked:
            ok = result.state == states.SUCCESS
            run_class_hooks(self, result.id, args, kwargs, result.result if ok else None,
                            None if ok else result.result, result.state == states.RETRY)
        if throw and result.state != states.SUCCESS:
            raise result.raised if result.state == states.RETRY else result.result
        return result

    # -- Celery's hooks of a base class (called only where a subclass overrides them) --------
    def before_start(self, task_id: str, args: tuple, kwargs: dict) -> None: ...

    def on_success(self, retval: Any, task_id: str, args: tuple, kwargs: dict) -> None: ...

    def on_failure(self, exc: BaseException, task_id: str, args: tuple, kwargs: dict,
                   einfo: Any) -> None: ...

    def on_retry(self, exc: BaseException, task_id: str, args: tuple, kwargs: dict,
                 einfo: Any) -> None: ...

    def after_return(self, status: str, retval: Any, task_id: str, args: tuple, kwargs: dict,
                     einfo: Any) -> None: ...

    def run(self, *args: Any, **kwargs: Any) -> Any:
        return self.invoke(*args, **kwargs)


def _class_options(cls: type) -> set[str]:
    """The options a subclass of CeleryTask sets as class attributes."""
    found: set[str] = set()
    for klass in cls.__mro__:
        if klass in (CeleryTask, Task, object):
            break
        found.update(k for k in vars(klass) if k in CLASS_OPTIONS)
    return found


def _conf_defaults(app: App, name: str) -> dict[str, Any]:
    """The task options that come from ``app.conf``: Celery's task_* defaults, then the
    annotations that match ``name`` (``'*'`` first)."""
    conf = app.conf
    get = getattr(conf, "peek_get", None)
    if get is None:  # a native app's settings (while the Celery app is being made)
        return {}
    out: dict[str, Any] = {}
    for key, option in (("task_time_limit", "time_limit"),
                        ("task_soft_time_limit", "soft_time_limit"),
                        ("task_ignore_result", "ignore_result"),
                        ("task_track_started", "track_started"),
                        ("task_default_rate_limit", "rate_limit")):
        value = get(key)
        if value:
            out[option] = value
    from fastq.compat.config import annotations_for

    out.update((k, v) for k, v in annotations_for(get("task_annotations"), name).items()
               if k in CLASS_OPTIONS)
    return out


def overrides_hooks(cls: type) -> bool:
    return any(getattr(cls, m) is not getattr(CeleryTask, m) for m in HOOK_METHODS)


def run_class_hooks(task: CeleryTask, task_id: str, args: tuple, kwargs: dict, value: Any,
                    exc: BaseException | None, retried: bool = False) -> None:
    from fastq.compat.result import ExceptionInfo

    einfo = ExceptionInfo((type(exc), exc, exc.__traceback__)) if exc is not None else None
    if exc is None:
        task.on_success(value, task_id, args, kwargs)
        status = states.SUCCESS
    elif retried:  # Celery: on_retry with the cause, and no after_return
        task.on_retry(exc.exc if isinstance(exc, Retry) and exc.exc else exc, task_id, args,
                      kwargs, einfo)
        return
    else:
        task.on_failure(exc, task_id, args, kwargs, einfo)
        status = states.FAILURE
    task.after_return(status, value if exc is None else exc, task_id, args, kwargs, einfo)


class ClassHooks(Middleware):
    """Calls the hooks (``on_success`` ...) of tasks whose class overrides them, in the worker."""

    def __init__(self) -> None:
        self._retried: set[str] = set()

    def before_execute(self, task: Any, message: Message) -> None:
        if isinstance(task, CeleryTask) and overrides_hooks(type(task)):
            args, kwargs = args_of(message)
            task.before_start(message.id, args, kwargs)

    def on_retry(self, task: Any, message: Message, exc: BaseException, countdown: float) -> None:
        self._retried.add(message.id)

    def after_execute(self, task: Any, message: Message, result: Any = None,
                      exc: BaseException | None = None) -> None:
        retried = message.id in self._retried
        self._retried.discard(message.id)
        if not isinstance(task, CeleryTask) or not overrides_hooks(type(task)):
            return
        from fastq.middleware import SkipMessage

        if isinstance(exc, SkipMessage):
            return
        args, kwargs = args_of(message)
        run_class_hooks(task, message.id, args, kwargs, result, exc, retried)


class TrackStarted(Middleware):
    """``track_started``: the STARTED state is written as the task starts (one more write)."""

    def before_execute(self, task: Any, message: Message) -> None:
        if getattr(task, "track_started", False):
            task.update_state(message.id, states.STARTED,
                              {"pid": os.getpid(), "hostname": socket.gethostname()})


class ChildTracker(Middleware):
    """Remembers this process's worker child (``self.request.hostname``, ``delivery_info``)."""

    def child_init(self, child: Any) -> None:
        _child[0] = child


def args_of(message: Message) -> tuple[tuple, dict]:
    """A message's arguments, decoded again for an observer (a hook, a signal, ``request``);
    ``((), {})`` if they do not decode: an observer never fails the task."""
    try:
        args, kwargs = unpack_body(message.body, message.codec, message.compressed, True)
    except Exception:  # noqa: BLE001 - a hook never fails the task
        return (), {}
    return tuple(args), dict(kwargs)
