"""Tasks: a function registered with an App, callable locally or sent to workers."""
from __future__ import annotations

import contextvars
import functools
import inspect
import math
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from fastq import keys, states
from fastq._core import encode_message, pack_body
from fastq.errors import BrokerUnavailable, EncodeError, Replaced
from fastq.message import CODEC_NAMES, Message, call_options, new_task_id
from fastq.ratelimit import parse_rate
from fastq.result import AsyncResult, EagerResult, state_record
from fastq.retry import MaxRetriesExceededError, Retry, RetryPolicy, seconds
from fastq.validation import Arguments, converting, plain
from fastq.workflows.canvas import Signature, chunks, group
from fastq.workflows.graph import submit

if TYPE_CHECKING:
    from fastq.app import App


def resolve_priority(priority: int | str) -> int:
    """A priority name (critical, high, normal, low, batch) or level 0..4 to a level."""
    if isinstance(priority, str):
        try:
            return keys.PRIORITY_NAMES.index(priority)
        except ValueError:
            raise ValueError(f"unknown priority {priority!r}; use one of {keys.PRIORITY_NAMES} "
                             "or 0 (critical) .. 4 (batch)") from None
    if isinstance(priority, int) and not isinstance(priority, bool) and 0 <= priority < keys.LEVELS:
        return priority
    raise ValueError(f"unknown priority {priority!r}; use 0 (critical) .. 4 (batch) or a name "
                     f"{keys.PRIORITY_NAMES}")


def _epoch_ms(name: str, when: datetime | float | int) -> int:
    """A point in time (a datetime, naive = UTC, or epoch seconds) to epoch milliseconds."""
    if isinstance(when, datetime):
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return int(when.timestamp() * 1000)
    epoch_s = float(when)
    if not math.isfinite(epoch_s):
        raise ValueError(f"{name} must be a datetime or finite epoch seconds, not {epoch_s}")
    return int(epoch_s * 1000)


def _seconds_ms(name: str, value: float | timedelta | None) -> int:
    """A duration option to whole milliseconds (0 = not set); a negative, NaN or infinite value is
    an error (a NaN would otherwise surface as "cannot convert float NaN to integer")."""
    if value is None:
        return 0
    return int(seconds(name, value.total_seconds() if isinstance(value, timedelta) else value)
               * 1000)


class Task:
    """A registered task. ``task(...)`` runs it here and now; ``task.delay(...)`` sends it.

    Options (Celery's names): queue, priority, ignore_result, serializer, bind, max_retries,
    retry_for/autoretry_for, dont_autoretry_for, default_retry_delay, retry_backoff,
    retry_backoff_max, retry_jitter, retry_schedule, soft_time_limit, time_limit, rate_limit,
    expires, unique_key, unique_for; ``typed`` (arguments checked by their annotations:
    fastq/validation.py).
    """

    def __init__(self, app: App, fn: Callable, name: str, *, queue: str | None = None,
                 priority: int | str | None = None, ignore_result: bool = False,
                 serializer: str | None = None, bind: bool = False, **options: Any):
        self.app = app
        self.fn = fn
        self.name = name
        self.queue = queue
        self.priority = resolve_priority(priority) if priority is not None else None
        self.ignore_result = ignore_result
        self.serializer = serializer
        self.bind = bind
        # The function as it is called, with the task first when ``bind``: the one call form used
        # by a local call and by the worker's sync and async paths (for ``async def``, calling it
        # gives the coroutine). A C partial, so a worker calls it without an extra Python frame.
        self.invoke: Callable[..., Any] = functools.partial(fn, self) if bind else fn
        self.retry_policy = RetryPolicy.from_options(options)
        self.soft_limit_ms = _seconds_ms("soft_time_limit", options.pop("soft_time_limit", None))
        self.hard_limit_ms = _seconds_ms("time_limit", options.pop("time_limit", None))
        self.rate_limit = options.pop("rate_limit", None)  # as given ("100/s"), Celery's attribute
        self.rate = parse_rate(self.rate_limit)  # tokens per second, or None for no limit
        self.expires = options.pop("expires", None)
        self.unique_key = options.pop("unique_key", None)  # str, or callable(*args, **kwargs)
        self.unique_for_ms = _seconds_ms("unique_for", options.pop("unique_for", 3600))
        typed = options.pop("typed", False)  # fastq/validation.py
        for ignored in ("acks_late", "reject_on_worker_lost", "track_started", "typing", "shared"):
            options.pop(ignored, None)
        if options:
            raise TypeError(f"unknown task options for {name}: {sorted(options)}")
        self.is_async = inspect.iscoroutinefunction(fn)
        self.arguments: Arguments | None = None
        self.check_at_send = typed is True
        if typed:
            if typed not in (True, "run"):
                raise ValueError(f"typed must be True (checked when sent and run) or 'run', "
                                 f"not {typed!r}")
            self.arguments = Arguments(fn, name, bind)
            self.invoke = converting(self.arguments, self.invoke)
        self.__doc__ = fn.__doc__
        self.__wrapped__ = fn

    def __repr__(self) -> str:
        return f"<@task: {self.name}>"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.invoke(*args, **kwargs)


    @property
    def request(self) -> Message | None:
        """The message being run (in a bound task: ``self.request.id``, ``.attempt``/``.retries``)."""
        return current_request.get()

    @property
    def codec(self) -> int:
        return CODEC_NAMES[self.serializer or self.app.settings.serializer]

    def retry(self, exc: BaseException | None = None, countdown: float | None = None,
              max_retries: int | None = None, **_celery_opts: Any) -> Retry:
        """From inside a bound task: run it again after ``countdown`` seconds (default: the retry
        policy's delay). Raises, so ``raise self.retry(...)`` and ``self.retry(...)`` both work."""
        limit = self.retry_policy.max_retries if max_retries is None else max_retries
        if countdown is not None:
            seconds("countdown", countdown)
        msg = current_request.get()
        if msg is not None and msg.attempt >= limit:
            if exc is not None:
                raise exc
            raise MaxRetriesExceededError(f"{self.name}[{msg.id}] retried {msg.attempt} times")
        raise Retry(exc, countdown, max_retries)

    def replace(self, sig: Any) -> Any:
        """Hand this running task's place to ``sig`` (Celery's ``self.replace``): a signature
        runs under this task's id, a canvas ends with a task of this id, and a workflow this task
        is part of goes on from there (fastq/workflows/replace.py). Raises
        :class:`fastq.errors.Replaced` (an ``Ignore``: this run writes no outcome). In an eager
        run, runs ``sig`` here and returns its result."""
        msg = current_request.get()
        if msg is None:
            raise RuntimeError("replace() is for a running task (self.replace in a bind=True "
                               "task)")
        if eager_run.get():
            from fastq.workflows.canvas import maybe_signature

            return maybe_signature(sig, self.app).apply().get()
        from fastq.workflows.replace import replace

        replace(self.app, msg, sig)
        raise Replaced(f"replaced by {sig!r}")

    def update_state(self, task_id: str | None = None, state: str | None = None,
                     meta: Any = None, **_celery_opts: Any) -> None:
        """Record a state of the running task now (e.g. ``state="PROGRESS", meta={"done": 3}``):
        ``AsyncResult.state`` and ``.info`` show it until the task's outcome replaces it."""
        msg = current_request.get()
        task_id = task_id or (msg.id if msg is not None else None)
        if task_id is None:
            raise ValueError("update_state outside a running task needs a task_id")
        if msg is not None and eager_run.get():
            return  # an eager run has no broker to tell (Celery's eager update_state is a no-op)
        conf = self.app.settings
        record = state_record(state or states.PENDING, meta, self.name, self.codec,
                              conf.compress_threshold)
        self.app.broker.set_state(task_id, record, int(conf.result_expires * 1000))

    def apply(self, args: Iterable[Any] | None = None, kwargs: dict[str, Any] | None = None, *,
              task_id: str | None = None, throw: bool = False, retries: int = 0,
              retry_inline: bool = True, **_options: Any) -> EagerResult:
        """Run the task here and now, as a worker would (``self.request`` set, retries run at once,
        without waiting), and return an :class:`EagerResult`; ``throw`` re-raises its exception.
        ``retry_inline=False`` runs it once (a retry it asks for is its ``raised``)."""
        args, kwargs = tuple(args or ()), dict(kwargs or {})
        msg = Message(task_id or new_task_id(), self.name, attempt=retries)
        token, eager = current_request.set(msg), eager_run.set(True)
        try:
            while True:
                try:
                    value = self.invoke(*args, **kwargs)
                except Exception as exc:  # noqa: BLE001 - it becomes the result
                    if retry_inline and self._retries_now(exc, msg):
                        msg.attempt += 1
                        continue
                    if throw:
                        raise
                    return EagerResult(msg.id, None, states.FAILURE,
                                       "".join(traceback.format_exception(exc)), self.app,
                                       exc.exc if isinstance(exc, Retry) and exc.exc else exc,
                                       raised=exc)
                return EagerResult(msg.id, value, states.SUCCESS, None, self.app)
        finally:
            current_request.reset(token)
            eager_run.reset(eager)

    def _retries_now(self, exc: BaseException, msg: Message) -> bool:
        """In an eager run: whether ``exc`` asks for another attempt (``self.retry()``, or an
        exception of ``autoretry_for``) that is still allowed."""
        if isinstance(exc, Retry):
            limit = self.retry_policy.max_retries if exc.max_retries is None else exc.max_retries
        elif self.retry_policy.retries_automatically(exc):
            limit = self.retry_policy.max_retries
        else:
            return False
        return msg.attempt < limit

    def delay(self, *args: Any, **kwargs: Any) -> AsyncResult:
        """Send with default options: ``task.delay(1, 2)`` is ``task.apply_async((1, 2))``."""
        return self.apply_async(args, kwargs)

    def apply_async(self, args: Iterable[Any] | None = None, kwargs: dict[str, Any] | None = None,
                    *, task_id: str | None = None, queue: str | None = None,
                    priority: int | str | None = None, serializer: str | None = None,
                    countdown: float | None = None, eta: datetime | float | None = None,
                    expires: datetime | float | None = None, soft_time_limit: float | None = None,
                    time_limit: float | None = None, unique_key: str | None = None,
                    unique_for: float | None = None, headers: dict[str, Any] | None = None,
                    ignore_result: bool | None = None, **options: Any) -> AsyncResult:
        """Send the task; returns its AsyncResult at once (inside ``app.batch()`` nothing is sent
        until the block ends).

        ``countdown`` (seconds from now) or ``eta`` (datetime or epoch seconds) delay it; the
        message waits in Redis, not in a worker. ``expires`` (seconds from now, datetime or
        epoch) makes a worker skip it once past. A ``unique_key`` held by a task that is still
        queued or running returns that task's result instead of sending a second one.
        ``headers`` travel with the message (``message.options``; Celery's ``request.<name>``);
        ``ignore_result=True`` stores no result for this call.
        """
        edges = {k: options.pop(k) for k in ("link", "link_error", "depends_on")
                 if options.get(k) is not None}
        if options:
            raise TypeError(f"unsupported apply_async options: {sorted(options)}")
        if edges:  # callbacks and dependencies make it a workflow graph (fastq/workflows/)
            sent = dict(task_id=task_id, queue=queue, priority=priority, serializer=serializer,
                        countdown=countdown, eta=eta, expires=expires,
                        soft_time_limit=soft_time_limit, time_limit=time_limit)
            return submit(Signature(self, args, kwargs, {
                **{k: v for k, v in sent.items() if v is not None}, **edges}))
        how = self._resolve(queue, priority, serializer, countdown, eta, expires, soft_time_limit,
                            time_limit, unique_key, unique_for, args or (), kwargs)
        return self._send(how, task_id or new_task_id(), args or (), kwargs or {},
                          call_options(headers, ignore_result))

    def s(self, *args: Any, **kwargs: Any) -> Signature:
        """A signature: this task with partial arguments (a chain prepends the previous result)."""
        return Signature(self, args, kwargs)

    def si(self, *args: Any, **kwargs: Any) -> Signature:
        """An immutable signature: it gets no result prepended."""
        return Signature(self, args, kwargs, immutable=True)

    def signature(self, args: Iterable[Any] | None = None, kwargs: dict[str, Any] | None = None,
                  **options: Any) -> Signature:
        return Signature(self, args, kwargs, options)

    subtask = signature

    def chunks(self, items: Iterable[Iterable[Any]], n: int) -> group:
        """Split ``items`` (argument tuples) into a group of ``ceil(len/n)`` tasks."""
        return chunks(self, items, n)

    def map(self, iterable: Iterable[Any]) -> list[AsyncResult]:
        """Send ``task(item)`` for each item, all in one pipelined round trip."""
        return self.starmap((item,) for item in iterable)

    def starmap(self, iterable: Iterable[Iterable[Any]]) -> list[AsyncResult]:
        """Send ``task(*args)`` for each args tuple, all in one pipelined round trip."""
        how = self._resolve()  # the task's defaults, resolved once for all messages
        with self.app.batch():
            return [self._send(how, new_task_id(), tuple(args), {}) for args in iterable]

    def _resolve(self, queue: str | None = None, priority: int | str | None = None,
                 serializer: str | None = None, countdown: float | None = None,
                 eta: datetime | float | None = None, expires: datetime | float | None = None,
                 soft_time_limit: float | None = None, time_limit: float | None = None,
                 unique_key: Any = None, unique_for: float | None = None,
                 args: Iterable[Any] = (), kwargs: dict[str, Any] | None = None) -> _Sending:
        """apply_async's options, checked and merged with the task's and the app's defaults.
        The queue: the one given, else the task's, else the app's router's, else the default."""
        conf = self.app.settings
        if priority is not None:
            level = resolve_priority(priority)
        elif self.priority is not None:
            level = self.priority
        else:
            level = conf.default_priority
        due_ms = 0
        if countdown is not None or eta is not None:
            now_ms = int(time.time() * 1000)
            due_ms = now_ms + _seconds_ms("countdown", countdown) if countdown is not None \
                else _epoch_ms("eta", eta)
            if due_ms <= now_ms:
                due_ms = 0
        expires = self.expires if expires is None else expires
        expires_ms = 0
        if expires is not None:
            expires_ms = _epoch_ms("expires", expires) if isinstance(expires, datetime) else \
                int(time.time() * 1000) + _seconds_ms("expires", expires)
        if not queue and not self.queue:
            router = self.app.router
            queue = router(self.name, args, kwargs or {}) if router is not None else None
        return _Sending(
            queue or self.queue or conf.default_queue, level,
            CODEC_NAMES[serializer] if serializer else self.codec, due_ms, expires_ms,
            _seconds_ms("soft_time_limit", soft_time_limit) or self.soft_limit_ms,
            _seconds_ms("time_limit", time_limit) or self.hard_limit_ms,
            unique_key or self.unique_key,
            _seconds_ms("unique_for", unique_for) or self.unique_for_ms)

    def _send(self, how: _Sending, task_id: str, args: Iterable[Any], kwargs: dict[str, Any],
              options: dict[str, Any] | None = None) -> AsyncResult:
        """Encode one message and send it (or add it to the open batch)."""
        app = self.app
        if self.check_at_send:  # typed=True: a bad argument fails here, not in a worker
            args, kwargs = self.arguments.convert(tuple(args), kwargs)
            args, kwargs = plain(args), plain(kwargs)
        key = how.unique_key
        if callable(key):
            key = key(*args, **kwargs)
        if key:
            owner = app.claim_unique(key, task_id, how.unique_for_ms)
            if owner is not None:
                return AsyncResult(owner, app)
        hooks = app.hooks
        try:
            msg, data = self._envelope(how, task_id, args, kwargs, options, idem_key=key or None)
            sent_now = app.send_message(how.queue, how.level, data, how.due_ms,
                                        msg if hooks.after_send else None)
        except BaseException:
            if key:  # never sent: else every later send with this key would get this task's id
                self._release_claim(key, task_id)
            raise
        if sent_now and hooks.after_send:  # outside the try: a raising hook un-sends nothing
            app.after_send([msg])
        return AsyncResult(task_id, app)

    def _envelope(self, how: _Sending, task_id: str, args: Iterable[Any], kwargs: dict[str, Any],
                  options: dict[str, Any] | None = None, **fields: Any) -> tuple[Message, bytes]:
        """The message and its encoded envelope, after the ``before_send`` hooks (which may add
        options or refuse it). ``options``: the message's options (headers; None: none);
        ``fields``: more Message fields (dag_id, parent_id ...)."""
        app = self.app
        conf = app.settings
        if options:
            fields["options"] = options
        if "parent_id" not in fields:  # sent by a running task: it is the parent (as in Celery)
            parent = current_request.get()
            if parent is not None:
                fields["parent_id"], fields["root_id"] = parent.id, parent.root_id or parent.id
                if parent.children is None:
                    parent.children = []
                parent.children.append(task_id)
        body, compressed = pack_body(args, kwargs, how.codec, conf.compress_threshold)
        msg = Message(task_id, self.name, body, how.codec, compressed, how.level, 0,
                      how.due_ms, how.expires_ms, how.soft_ms, how.hard_ms, **fields,
                      queue=how.queue)
        for hook in app.hooks.before_send:  # may add options (headers), or refuse the send
            hook(app, msg)
        data = encode_message(msg)
        if len(data) > conf.max_message_bytes:
            raise EncodeError(f"message for {self.name} is {len(data):,} bytes, above "
                              f"max_message_bytes ({conf.max_message_bytes:,}): pass a "
                              "reference to the data (a key, a path, a URL) instead")
        return msg, data

    def _release_claim(self, key: str, task_id: str) -> None:
        """Give back a uniqueness key whose message was not sent; if the broker cannot be
        reached for that either, the claim runs out after ``unique_for``."""
        try:
            self.app.broker.release_unique(key, task_id)
        except BrokerUnavailable:
            pass

    def AsyncResult(self, task_id: str) -> AsyncResult:  # noqa: N802 - Celery's name
        return AsyncResult(task_id, self.app)


@dataclass(slots=True, frozen=True)
class _Sending:
    """How to send a task's messages, resolved once from apply_async's options (or, for map and
    starmap, from the task's defaults for all of them)."""
    queue: str
    level: int
    codec: int
    due_ms: int
    expires_ms: int
    soft_ms: int
    hard_ms: int
    unique_key: Any
    unique_for_ms: int



current_request: contextvars.ContextVar[Message | None] = contextvars.ContextVar(
    "fastq_request", default=None)
eager_run: contextvars.ContextVar[bool] = contextvars.ContextVar("fastq_eager", default=False)
"""True while a task runs through :meth:`Task.apply` (Celery's ``request.is_eager``)."""
