"""Result records and ``AsyncResult``.

A finished task's record is pushed to the list ``fastq:r:{id}`` (with a TTL). A list, not a string,
because a waiter can then block on the key itself (``BLMOVE key key``): one key and two commands per
result instead of a value plus a separate notice list, and no window between "check" and "wait".
"""
from __future__ import annotations

import builtins
import sys
import time
import traceback as tb_module
from typing import TYPE_CHECKING, Any

from fastq import current, errors, states
from fastq._core import pack_value, unpack_value
from fastq.errors import EncodeError, TaskError
from fastq.errors import TimeoutError as FastqTimeoutError

if TYPE_CHECKING:
    from fastq.app import App

# record layout: [state, value, exc_type, exc_args, traceback, date_done_ms, task_name(, children)]
_SIMPLE = (str, int, float, bool, type(None))
_UPSTREAM_FAILED = f"{errors.UpstreamFailed.__module__}.{errors.UpstreamFailed.__qualname__}"


def exception_record(exc: BaseException, task_name: str, codec: int, threshold: int,
                     state: str = states.FAILURE) -> bytes:
    cls = type(exc)
    type_name = cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"
    args = list(exc.args) if all(isinstance(a, _SIMPLE) for a in exc.args) else [str(exc)]
    trace = "".join(tb_module.format_exception(exc))
    record = [state, str(exc), type_name, args, trace, int(time.time() * 1000), task_name]
    try:
        return pack_value(record, codec, threshold)
    except EncodeError:  # e.g. non-UTF-8 text under json: fall back to msgpack
        return pack_value(record, 0, threshold)


def success_record(value: Any, task_name: str, codec: int, threshold: int,
                   children: list[str] | None = None) -> bytes:
    """Encode a return value; a value the codec cannot carry becomes a FAILURE (EncodeError).
    ``children``: the ids of the tasks it sent while it ran."""
    record = _value_record(states.SUCCESS, value, task_name)
    if children:
        record.append(children)
    try:
        return pack_value(record, codec, threshold)
    except EncodeError as exc:
        return exception_record(exc, task_name, codec, threshold)


def state_record(state: str, meta: Any, task_name: str, codec: int, threshold: int) -> bytes:
    """A non-terminal record (``update_state``: a custom state such as PROGRESS, or STARTED)
    whose value is ``meta``."""
    return pack_value(_value_record(state, meta, task_name), codec, threshold)


def _value_record(state: str, value: Any, task_name: str) -> list:
    """A record carrying a value, no exception: a result, or an ``update_state``'s meta."""
    return [state, value, None, None, None, int(time.time() * 1000), task_name]


def _exception_class(type_name: str) -> Any:
    """The class a record's exception type names: a builtin, or a class of a module this process
    has imported already (a project's own exceptions, fastq's); never imports anything."""
    if "." not in type_name:
        return getattr(builtins, type_name, None)
    if type_name == _UPSTREAM_FAILED:
        return errors.UpstreamFailed
    module_name, _, qualname = type_name.rpartition(".")
    obj: Any = sys.modules.get(module_name)
    while obj is None and "." in module_name:  # a nested class: module.Outer.Inner
        module_name, _, outer = module_name.rpartition(".")
        qualname = f"{outer}.{qualname}"
        obj = sys.modules.get(module_name)
    for part in qualname.split(".") if obj is not None else ():
        obj = getattr(obj, part, None)
    return obj


def rebuild_exception(type_name: str, args: list, message: str, trace: str | None) -> BaseException:
    """The exception with its own type when this process knows the class (a builtin, or one of
    an imported module: the project's own exceptions, fastq's); else a TaskError naming it."""
    cls = _exception_class(type_name)
    if isinstance(cls, type) and issubclass(cls, BaseException):
        try:
            exc = cls(*args)
        except Exception:
            exc = cls(message)
        exc.__notes__ = [f"remote traceback:\n{trace}"] if trace else []
        return exc
    return TaskError(type_name, message, trace)


class AsyncResult:
    """A handle on one task's outcome. Cheap to create; talks to Redis only when asked."""

    __slots__ = ("id", "app", "_record", "parent", "known_children")

    def __init__(self, id: str, app: App | None = None):  # noqa: A002 - Celery's name
        if app is None:
            app = current.app()
        self.id = id
        self.app = app
        self._record: list | None = None
        self.parent: AsyncResult | None = None  # the task before it in a chain
        self.known_children: list[AsyncResult] | None = None  # its link= callbacks, if sent so

    def __repr__(self) -> str:
        return f"<AsyncResult: {self.id}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AsyncResult) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    def _decode(self, data: bytes | None) -> list | None:
        if data is None:
            return None
        record = unpack_value(data, accept_pickle="pickle" in self.app.conf.accept_content)
        self._record = record
        return record

    def _load(self) -> list | None:
        if self._record is None:
            self._decode(self.app.broker.peek_result(self.id))
        return self._record

    def get(self, timeout: float | None = None, propagate: bool = True, **_celery_opts) -> Any:
        """Wait for the task and return its value; re-raise its exception when ``propagate``.

        Blocks in Redis on the result key (no polling). ``timeout`` in seconds; None waits forever.
        """
        record = self._record or self._decode(self.app.broker.wait_result(self.id, timeout))
        if record is None:
            raise FastqTimeoutError(f"task {self.id} not ready after {timeout} s")
        if record[0] == states.SUCCESS:
            return record[1]
        exc = rebuild_exception(record[2], record[3], record[1], record[4])
        if propagate:
            raise exc
        return exc

    wait = get

    def _latest(self) -> list | None:
        """The terminal record, else the latest non-terminal one (RETRY), else None."""
        record = self._load()
        if record is None:
            raw = self.app.broker.peek_state(self.id)
            if raw is not None:
                return unpack_value(raw, accept_pickle="pickle" in self.app.conf.accept_content)
        return record

    @property
    def state(self) -> str:
        record = self._latest()
        return record[0] if record else states.PENDING

    status = state

    def ready(self) -> bool:
        return self.state in states.READY_STATES

    def successful(self) -> bool:
        return self.state == states.SUCCESS

    def failed(self) -> bool:
        return self.state == states.FAILURE

    @property
    def result(self) -> Any:
        """The return value, or the exception instance for a failed task; while it runs, the
        ``meta`` of its latest ``update_state`` (or the exception of a RETRY); None while
        pending."""
        record = self._latest()
        if not record:
            return None
        if record[2] is None:  # SUCCESS, or a custom state's meta
            return record[1]
        return rebuild_exception(record[2], record[3], record[1], record[4])

    info = result

    @property
    def task_id(self) -> str:
        return self.id

    @property
    def children(self) -> list[AsyncResult] | None:
        """The tasks it sent while it ran and its ``link=`` callbacks (Celery's ``children``);
        None while it has no outcome."""
        record = self._load()
        if record is None:
            return self.known_children
        sent = record[7] if len(record) > 7 and record[7] else ()
        return [*(self.known_children or ()), *(AsyncResult(i, self.app) for i in sent)]

    @property
    def name(self) -> str | None:
        """The task's name, once a record of it exists."""
        record = self._latest()
        return record[6] if record and len(record) > 6 else None

    @property
    def traceback(self) -> str | None:
        record = self._latest()
        return record[4] if record else None

    def revoke(self, terminate: bool = False, **_celery_opts) -> None:
        """Revoke this task: not run if still queued; stopped if running and ``terminate``."""
        self.app.control.revoke(self.id, terminate=terminate)

    @property
    def date_done(self) -> float | None:
        record = self._load()
        return record[5] / 1000.0 if record else None

    def forget(self) -> None:
        self.app.broker.forget_result(self.id)
        self._record = None


class EagerResult(AsyncResult):
    """The outcome of a task run here and now (``task.apply()``, or ``task_always_eager``):
    holds its value or exception itself and never talks to a broker."""

    __slots__ = ("_value", "_state", "_traceback", "_exc", "raised")

    def __init__(self, id: str, value: Any, state: str, traceback: str | None = None,  # noqa: A002
                 app: App | None = None, exc: BaseException | None = None,
                 raised: BaseException | None = None):
        super().__init__(id, app)
        self._value = value
        self._state = state
        self._traceback = traceback
        self._exc = exc
        self.raised = raised  # the exception as the task raised it (a Retry is not unwrapped)

    def __repr__(self) -> str:
        return f"<EagerResult: {self.id}>"

    def get(self, timeout: float | None = None, propagate: bool = True, **_celery_opts) -> Any:
        if self._exc is not None:
            if propagate and self._state != states.RETRY:  # Celery: RETRY does not propagate
                raise self._exc
            return self._exc
        return self._value

    wait = get

    @property
    def state(self) -> str:
        return self._state

    status = state

    @property
    def result(self) -> Any:
        return self._exc if self._exc is not None else self._value

    info = result

    @property
    def traceback(self) -> str | None:
        return self._traceback

    @property
    def date_done(self) -> float | None:
        return None

    @property
    def name(self) -> str | None:
        return None

    def forget(self) -> None:
        pass

    def revoke(self, terminate: bool = False, **_celery_opts) -> None:
        pass
