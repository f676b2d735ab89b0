"""Celery's canvas: signatures, and the ``chain``, ``group`` and ``chord`` built from them.

A :class:`Signature` is a dict (as in Celery, so it travels inside messages: ``link_error``
callbacks, ``self.replace``) naming a task, its partial arguments and its send options. Composite
signatures keep their parts in ``kwargs`` as Celery does (``tasks``; ``header`` and ``body``).
Sending one compiles it into a graph (fastq/workflows/graph.py) that runs in Redis.

Argument passing (Celery's rules): ``sig.delay(*a)`` prepends ``a`` to the signature's own
arguments; in a chain each task gets the previous result prepended, a chord body the list of the
header's results in header order; an immutable signature (``task.si``) gets nothing prepended.
"""
from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from fastq import current
from fastq.message import new_task_id
from fastq.result import AsyncResult

if TYPE_CHECKING:
    from fastq.workflows.results import GroupResult

TASK, CHAIN, GROUP, CHORD = None, "chain", "group", "chord"


class Signature(dict):
    """``Signature(task_or_name, args, kwargs, options)``: one task call, not yet sent."""

    def __init__(self, task: Any = None, args: Iterable[Any] | None = None,
                 kwargs: dict[str, Any] | None = None, options: dict[str, Any] | None = None,
                 subtask_type: str | None = None, immutable: bool = False, app: Any = None,
                 **more_options: Any):
        if isinstance(task, dict) and not hasattr(task, "apply_async"):  # a signature as a dict
            src = task
            task, args, kwargs = src.get("task"), src.get("args"), src.get("kwargs")
            options, subtask_type = src.get("options"), src.get("subtask_type")
            immutable = bool(src.get("immutable"))
        name = getattr(task, "name", task)
        super().__init__(task=name, args=tuple(args or ()), kwargs=dict(kwargs or {}),
                         options={**(options or {}), **more_options}, subtask_type=subtask_type,
                         immutable=immutable)
        self._app = app if app is not None else getattr(task, "app", None)

    # Celery's attribute names for the dict's fields
    task = property(lambda self: self["task"])
    name = task
    args = property(lambda self: self["args"])
    kwargs = property(lambda self: self["kwargs"])
    options = property(lambda self: self["options"])
    subtask_type = property(lambda self: self["subtask_type"])
    immutable = property(lambda self: self["immutable"])

    @property
    def app(self) -> Any:
        return self._app if self._app is not None else current.app()

    @property
    def type(self) -> Any:
        """The registered Task (None when it is not registered in this process)."""
        return self.app.tasks.get(self["task"])

    @property
    def id(self) -> str | None:
        return self.options.get("task_id")

    def __repr__(self) -> str:
        args = ", ".join([*map(repr, self.args), *(f"{k}={v!r}" for k, v in self.kwargs.items())])
        return f"{self['task']}({args}){'!' if self.immutable else ''}"

    # -- building -----------------------------------------------------------------------------
    def clone(self, args: Iterable[Any] | None = None, kwargs: dict[str, Any] | None = None,
              **options: Any) -> Signature:
        """A copy with ``args`` prepended and ``kwargs``/``options`` merged (unless immutable)."""
        # composite parts and link lists must not be shared
        return self._merged(copy.deepcopy(self), args, kwargs, options)

    def _with_call(self, args: Iterable[Any] | None, kwargs: dict[str, Any] | None,
                   options: dict[str, Any]) -> Signature:
        """What ``apply_async`` submits: a shallow copy with the call's arguments merged. Its
        parts are shared, since submitting reads them and never changes them: sending a group
        of 10,000 signatures copies none of them."""
        sig = type(self).__new__(type(self))
        dict.update(sig, self)
        sig.__dict__.update(self.__dict__)
        return self._merged(sig, args, kwargs, options)

    def _merged(self, sig: Signature, args: Iterable[Any] | None,
                kwargs: dict[str, Any] | None, options: dict[str, Any]) -> Signature:
        sig["options"] = {**sig["options"], **options}
        if not self.immutable:
            sig["args"] = tuple(args or ()) + tuple(self.args)
            sig["kwargs"] = {**self.kwargs, **(kwargs or {})}
        return sig

    def __deepcopy__(self, memo: dict) -> Signature:
        sig = type(self).__new__(type(self))
        dict.update(sig, copy.deepcopy(dict(self), memo))
        sig._app = self._app
        sig.__dict__.update({k: v for k, v in self.__dict__.items() if k != "_app"})
        return sig

    def set(self, immutable: bool | None = None, **options: Any) -> Signature:
        """Add send options (queue, priority, countdown ...); returns the signature."""
        if immutable is not None:
            self["immutable"] = immutable
        self.options.update(options)
        return self

    def set_immutable(self, immutable: bool) -> None:
        self["immutable"] = immutable

    def link(self, callback: Signature) -> Signature:
        """Run ``callback`` with this task's result once it succeeded."""
        self.options.setdefault("link", []).append(callback)
        return callback

    def link_error(self, errback: Signature) -> Signature:
        """Run ``errback`` once if this task fails: ``errback(request, exc, traceback)`` when it
        takes three arguments, else the old form ``errback(task_id)``."""
        self.options.setdefault("link_error", []).append(errback)
        return errback

    def freeze(self) -> AsyncResult:
        """Fix the task id now; returns its result handle."""
        return AsyncResult(self.options.setdefault("task_id", new_task_id()), self.app)

    def __or__(self, other: Any) -> Signature:
        if isinstance(other, Signature):
            if isinstance(self, group) and not isinstance(other, group):
                return chord(self, other)  # Celery: a group piped into a task is a chord
            return chain(self, other)
        return NotImplemented

    # -- running ------------------------------------------------------------------------------
    def delay(self, *args: Any, **kwargs: Any) -> Any:
        return self.apply_async(args, kwargs)

    def apply_async(self, args: Iterable[Any] | None = None, kwargs: dict[str, Any] | None = None,
                    **options: Any) -> Any:
        """Send it: a plain task call goes out as one message; anything with links, and every
        chain, group or chord, as one graph (fastq/workflows/graph.py)."""
        sig = self._with_call(args, kwargs, options)
        if sig.app.runs_eagerly():  # Celery's task_always_eager
            from fastq.workflows.eager import run

            return run(sig)
        if sig.subtask_type is TASK and not sig.options.get("link") \
                and not sig.options.get("link_error") and not sig.options.get("depends_on"):
            opts = dict(sig.options)
            return sig.app.task_for(sig["task"]).apply_async(sig.args, sig.kwargs, **opts)
        from fastq.workflows.graph import submit
        return submit(sig)

    def apply(self, args: Iterable[Any] | None = None, kwargs: dict[str, Any] | None = None,
              **options: Any) -> Any:
        """Run it here and now, every task of it as a worker would (fastq/workflows/eager.py);
        returns an EagerResult (a GroupResult of them for a group)."""
        from fastq.workflows.eager import run

        return run(self._with_call(args, kwargs, options))

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run the task here and now (no broker), as ``task(*args)`` would."""
        sig = self.clone(args, kwargs)
        return sig.app.get_task(sig["task"])(*sig.args, **sig.kwargs)


LEAD_KWARGS = "lead_kwargs"  # option of a composite: keyword arguments for its first tasks


class _Composite(Signature):
    """A chain, group or chord: its parts are in ``kwargs``; arguments given to it when it is
    sent (``args``, and ``options["lead_kwargs"]``) go to its first tasks."""

    def _merged(self, sig: Signature, args: Iterable[Any] | None,
                kwargs: dict[str, Any] | None, options: dict[str, Any]) -> Signature:
        sig["args"] = tuple(args or ()) + tuple(self.args)
        sig["options"] = {**sig["options"], **options}
        if kwargs:
            sig.options[LEAD_KWARGS] = {**self.options.get(LEAD_KWARGS, {}), **kwargs}
        return sig


class chain(_Composite):  # noqa: N801 - Celery's name
    """``chain(a.s(), b.s(), c.s())`` or ``a.s() | b.s() | c.s()``: each gets the previous result."""

    def __init__(self, *tasks: Any, app: Any = None, **options: Any):
        if len(tasks) == 1 and not isinstance(tasks[0], dict):
            tasks = tuple(tasks[0])  # chain(iterable)
        flat: list[Signature] = []
        for t in tasks:
            t = maybe_signature(t, app)
            if isinstance(t, chain) and not t.options:
                flat.extend(t.tasks)
            else:
                flat.append(t)
        super().__init__("fastq.chain", (), {"tasks": flat}, options, subtask_type=CHAIN,
                         app=app or next((t._app for t in flat if t._app is not None), None))

    tasks = property(lambda self: self.kwargs["tasks"])

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.apply_async(args, kwargs)

    def __or__(self, other: Any) -> Signature:
        if isinstance(other, Signature):
            return chain(*self.tasks, other, app=self._app, **self.options)
        return NotImplemented

    def __repr__(self) -> str:
        return " | ".join(map(repr, self.tasks)) or "chain()"


class group(_Composite):  # noqa: N801 - Celery's name
    """``group(a.s(1), a.s(2))`` or ``group(sigs)``: run together; the result is their list."""

    def __init__(self, *tasks: Any, app: Any = None, **options: Any):
        if len(tasks) == 1 and not isinstance(tasks[0], dict):
            tasks = tuple(tasks[0])  # group(iterable)
        members = [maybe_signature(t, app) for t in tasks]
        super().__init__("fastq.group", (), {"tasks": members}, options, subtask_type=GROUP,
                         app=app or next((t._app for t in members if t._app is not None), None))

    tasks = property(lambda self: self.kwargs["tasks"])

    def __call__(self, *args: Any, **kwargs: Any) -> GroupResult:
        return self.apply_async(args, kwargs)

    def __len__(self) -> int:  # dict's len would count the fields
        return len(self.tasks)

    def __iter__(self):
        return iter(self.tasks)

    def __repr__(self) -> str:
        return f"group({', '.join(map(repr, self.tasks))})"


class chord(_Composite):  # noqa: N801 - Celery's name
    """``chord(header, body)`` or ``chord(header)(body)``: ``body`` gets the list of the header's
    results, in header order, once every header task succeeded."""

    def __init__(self, header: Any, body: Any = None, app: Any = None, **options: Any):
        if isinstance(header, dict) and header.get("subtask_type") == CHORD and body is None:
            header, body = header["kwargs"]["header"], header["kwargs"]["body"]
        members = header.tasks if isinstance(header, group) else [
            maybe_signature(t, app) for t in (header or ())]
        head = group(members, app=app)
        tail = maybe_signature(body, app) if body is not None else None
        # an empty header has no app of its own: the body's (else the current app's queues,
        # not the tasks' app, would be used)
        super().__init__("fastq.chord", (), {"header": head, "body": tail}, options,
                         subtask_type=CHORD,
                         app=app or head._app or (tail._app if tail is not None else None))

    header = property(lambda self: self.kwargs["header"])
    body = property(lambda self: self.kwargs["body"])

    def __call__(self, body: Any = None, **options: Any) -> Any:
        if body is not None:
            return chord(self.header, body, app=self._app, **{**self.options, **options}
                         ).apply_async()
        return self.apply_async(**options)

    def __repr__(self) -> str:
        return f"chord({self.header!r}, {self.body!r})"


def signature(task_or_name: Any, args: Iterable[Any] = (), kwargs: dict[str, Any] | None = None,
              app: Any = None, **options: Any) -> Signature:
    """A signature of a Task or task name (or a signature dict, rebuilt with its type)."""
    if isinstance(task_or_name, dict) and not hasattr(task_or_name, "apply_async"):
        return maybe_signature(task_or_name, app)
    return Signature(task_or_name, args, kwargs, options, app=app)


def maybe_signature(obj: Any, app: Any = None) -> Signature:
    """``obj`` as a Signature of the right kind: signatures pass, dicts are rebuilt."""
    if isinstance(obj, Signature):
        return obj
    if isinstance(obj, dict):
        kind = obj.get("subtask_type")
        options = dict(obj.get("options") or {})
        if kind == CHAIN:
            return chain(*obj["kwargs"]["tasks"], app=app, **options)
        if kind == GROUP:
            return group(obj["kwargs"]["tasks"], app=app, **options)
        if kind == CHORD:
            return chord(obj["kwargs"]["header"], obj["kwargs"]["body"], app=app, **options)
        return Signature(obj, app=app)
    if hasattr(obj, "s"):  # a Task given where a signature is expected
        return obj.s()
    raise TypeError(f"not a signature: {obj!r}")


def chunks(task: Any, items: Iterable[Iterable[Any]], n: int) -> group:
    """Split ``items`` (argument tuples) into chunks of ``n``: a group whose members each run
    ``task(*args)`` for every tuple of one chunk and return the list of results."""
    if n < 1:
        raise ValueError("chunks: n must be at least 1")
    items = [tuple(i) for i in items]
    name = getattr(task, "name", task)
    app = getattr(task, "app", None)
    return group([Signature("fastq.starmap", (name, items[i:i + n]), app=app)
                  for i in range(0, len(items), n)], app=app)
