"""Tasks: a function registered with an App, callable locally or sent to workers."""
from __future__ import annotations

import inspect
import uuid
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from fastq import keys
from fastq._core import encode_message, pack_body
from fastq.message import CODEC_NAMES, Message
from fastq.result import AsyncResult

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


class Task:
    """A registered task. ``task(...)`` runs it here and now; ``task.delay(...)`` sends it."""

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
        self.options = options
        self.is_async = inspect.iscoroutinefunction(fn)
        self.__doc__ = fn.__doc__
        self.__wrapped__ = fn

    def __repr__(self) -> str:
        return f"<@task: {self.name}>"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.bind:
            return self.fn(self, *args, **kwargs)
        return self.fn(*args, **kwargs)

    @property
    def codec(self) -> int:
        return CODEC_NAMES[self.serializer or self.app.conf.serializer]

    def delay(self, *args: Any, **kwargs: Any) -> AsyncResult:
        """Send with default options: ``task.delay(1, 2)`` is ``task.apply_async((1, 2))``."""
        return self.apply_async(args, kwargs)

    def apply_async(self, args: Iterable[Any] | None = None, kwargs: dict[str, Any] | None = None,
                    *, task_id: str | None = None, queue: str | None = None,
                    priority: int | str | None = None, serializer: str | None = None,
                    **options: Any) -> AsyncResult:
        """Send the task; returns its AsyncResult at once (inside ``app.batch()`` nothing is sent
        until the block ends)."""
        if options:
            raise TypeError(f"unsupported apply_async options: {sorted(options)}")
        app = self.app
        conf = app.conf
        task_id = task_id or str(uuid.uuid4())
        codec = CODEC_NAMES[serializer] if serializer else self.codec
        if priority is not None:
            level = resolve_priority(priority)
        elif self.priority is not None:
            level = self.priority
        else:
            level = conf.default_priority
        body, compressed = pack_body(args or (), kwargs or {}, codec, conf.compress_threshold)
        data = encode_message(Message(task_id, self.name, body, codec, compressed, level))
        app.send_message(queue or self.queue or conf.default_queue, level, data)
        return AsyncResult(task_id, app)

    def map(self, iterable: Iterable[Any]) -> list[AsyncResult]:
        """Send ``task(item)`` for each item, all in one pipelined round trip."""
        with self.app.batch():
            return [self.apply_async((item,)) for item in iterable]

    def starmap(self, iterable: Iterable[Iterable[Any]]) -> list[AsyncResult]:
        """Send ``task(*args)`` for each args tuple, all in one pipelined round trip."""
        with self.app.batch():
            return [self.apply_async(tuple(args)) for args in iterable]

    def AsyncResult(self, task_id: str) -> AsyncResult:  # noqa: N802 - Celery's name
        return AsyncResult(task_id, self.app)
