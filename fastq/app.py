"""The App: configuration, the task registry, and the way messages leave the process."""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, overload

import msgpack

from fastq import current, log
from fastq._core import decode_message
from fastq.broker import Broker, connect
from fastq.broker.embedded import resolve_broker_url
from fastq.config import Settings
from fastq.errors import NotRegistered
from fastq.message import new_task_id
from fastq.middleware import Hooks, Middleware
from fastq.result import AsyncResult
from fastq.schedules import add_periodic_task
from fastq.task import Task, resolve_priority
from fastq.workflows.canvas import Signature
from fastq.workflows.dag import Dag
from fastq.workflows.replace import ACCUMULATE

if TYPE_CHECKING:
    from fastq.message import Message


def _unregistered(*_args: Any, **_kwargs: Any) -> None:
    raise NotRegistered("this task is not registered in this process; it runs on a worker")


def _starmap(task: Task, name: str, items: list) -> list:
    """``chunks()``' member task: ``name(*args)`` for each args of the chunk, here, in order."""
    fn = task.app.get_task(name)
    return [fn(*args) for args in items]


def _accumulate(values: list) -> list:
    """A chord body giving its header's results as they are (``Task.replace`` by a group)."""
    return values


def current_app() -> App:
    """The most recently created App (Celery's ``current_app``); a default one if none exists."""
    return current.app()


class Control:
    """Celery's ``app.control``: remote control of workers through Redis."""

    def __init__(self, app: App):
        self.app = app

    def revoke(self, task_id: str | list[str], terminate: bool = False, **_celery_opts: Any) -> None:
        """A revoked task that is still queued (or delayed) never runs; with ``terminate`` a
        running one is stopped (its child is killed and replaced). Reaches every worker within
        ``revocation_sync_ms``; kept for ``revoke_expires`` seconds."""
        ids = [task_id] if isinstance(task_id, str) else list(task_id)
        self.app.broker.revoke(ids, terminate, self.app.conf.revoke_expires)

    def broadcast(self, command: str, arguments: dict[str, Any] | None = None,
                  destination: list[str] | None = None, reply: bool = False,
                  timeout: float = 1.0, limit: int | None = None,
                  **_celery_opts: Any) -> list[dict[str, Any]]:
        """Send ``command`` to every worker (or those named in ``destination``); with ``reply``
        the replies that arrive within ``timeout`` s, ``[{worker name: reply}, ...]``
        (fastq/worker/remote.py has the commands)."""
        command_id = new_task_id()
        broker = self.app.broker
        broker.broadcast(command_id, msgpack.packb({
            "command": command, "arguments": arguments or {}, "reply": reply,
            "destination": list(destination) if destination else None}))
        if not reply:
            return []
        if destination and limit is None:
            limit = len(destination)
        return [msgpack.unpackb(r) for r in broker.replies(command_id, timeout, limit)]

    def ping(self, destination: list[str] | None = None, timeout: float = 1.0,
             **_celery_opts: Any) -> list[dict[str, Any]]:
        return self.broadcast("ping", destination=destination, reply=True, timeout=timeout)

    def shutdown(self, destination: list[str] | None = None, **_celery_opts: Any) -> None:
        """Stop workers warm (as SIGTERM does)."""
        self.broadcast("shutdown", destination=destination)

    # Run-time changes; each takes broadcast's destination / reply / timeout / limit.
    def rate_limit(self, task_name: str, rate_limit: str | float | None,
                   destination: list[str] | None = None, **options: Any) -> list[dict[str, Any]]:
        """Set a task's rate limit (``"100/s"``; None or 0: none) on the running workers.
        fastq's rate limits are global buckets, so give every worker the same one."""
        return self.broadcast("rate_limit", {"task_name": task_name, "rate_limit": rate_limit},
                              destination, **options)

    def time_limit(self, task_name: str, soft: float | None = None, hard: float | None = None,
                   destination: list[str] | None = None, **options: Any) -> list[dict[str, Any]]:
        """Set a task's time limits in seconds (None: none) on the running workers; they replace
        the limits its messages carry."""
        return self.broadcast("time_limit", {"task_name": task_name, "soft": soft, "hard": hard},
                              destination, **options)

    def pool_grow(self, n: int = 1, destination: list[str] | None = None,
                  **options: Any) -> list[dict[str, Any]]:
        return self.broadcast("pool_grow", {"n": n}, destination, **options)

    def pool_shrink(self, n: int = 1, destination: list[str] | None = None,
                    **options: Any) -> list[dict[str, Any]]:
        return self.broadcast("pool_shrink", {"n": n}, destination, **options)

    def autoscale(self, max: int, min: int, destination: list[str] | None = None,  # noqa: A002
                  **options: Any) -> list[dict[str, Any]]:
        """fastq runs ``max`` children (see the worker's ``--autoscale``)."""
        return self.broadcast("autoscale", {"max": max, "min": min}, destination, **options)

    def add_consumer(self, queue: str, exchange: str | None = None,
                     exchange_type: str | None = None, routing_key: str | None = None,
                     options: dict | None = None, destination: list[str] | None = None,
                     **broadcast_options: Any) -> list[dict[str, Any]]:
        """Start reading ``queue`` (the exchange arguments are Celery's and mean nothing here)."""
        return self.broadcast("add_consumer", {"queue": queue}, destination, **broadcast_options)

    def cancel_consumer(self, queue: str, destination: list[str] | None = None,
                        **options: Any) -> list[dict[str, Any]]:
        return self.broadcast("cancel_consumer", {"queue": queue}, destination, **options)

    def purge(self) -> int:
        """Drop every waiting message of every queue; returns how many."""
        broker = self.app.broker
        return sum(broker.purge(q) for q in broker.queues())

    def inspect(self, destination: list[str] | None = None, timeout: float = 1.0,
                limit: int | None = None, **_celery_opts: Any) -> Inspect:
        return Inspect(self, destination, timeout, limit)

    def set_priority(self, task_id: str, priority: int | str, queue: str | None = None) -> bool:
        """Move a task that is still waiting in its queue to another priority level; False when
        it is no longer waiting (running, done, delayed) or not found."""
        return self.app.broker.set_priority(queue or self.app.conf.default_queue, task_id,
                                            resolve_priority(priority))


class Inspect:
    """Celery's ``app.control.inspect()``: each method returns ``{worker name: reply}`` merged
    from every worker that answered within the timeout, or None when none did."""

    def __init__(self, control: Control, destination: list[str] | None, timeout: float,
                 limit: int | None):
        self.control, self.destination, self.timeout, self.limit = \
            control, destination, timeout, limit

    def _ask(self, command: str, **arguments: Any) -> dict[str, Any] | None:
        merged: dict[str, Any] = {}
        for reply in self.control.broadcast(command, arguments, self.destination, reply=True,
                                            timeout=self.timeout, limit=self.limit):
            merged.update(reply)
        return merged or None

    def ping(self) -> dict[str, Any] | None:
        return self._ask("ping")

    def active(self, safe: Any = None) -> dict[str, Any] | None:
        return self._ask("active")

    def reserved(self, safe: Any = None) -> dict[str, Any] | None:
        return self._ask("reserved")

    def scheduled(self, safe: Any = None) -> dict[str, Any] | None:
        return self._ask("scheduled")

    def registered(self, *taskinfoitems: Any) -> dict[str, Any] | None:
        return self._ask("registered")

    registered_tasks = registered

    def stats(self) -> dict[str, Any] | None:
        return self._ask("stats")

    def active_queues(self) -> dict[str, Any] | None:
        return self._ask("active_queues")

    def revoked(self) -> dict[str, Any] | None:
        return self._ask("revoked")

    def conf(self, with_defaults: bool = False) -> dict[str, Any] | None:
        return self._ask("conf", with_defaults=with_defaults)


class App:
    """``App("proj", broker="redis://...")``; settings are the fields of :class:`fastq.config.Settings`."""

    task_class: type[Task] = Task

    def __init__(self, main: str = "fastq", broker: str | None = None,
                 result_backend: str | None = None, *,
                 middleware: Iterable[Middleware] = (), **settings: Any):
        self.main = main
        # ``settings`` is what the engine reads; ``conf`` is what users read and write (the same
        # object here; Celery's key mapping over it in fastq.compat)
        self.settings = Settings.from_env(broker_url=broker, result_backend=result_backend,
                                          **settings)
        self.conf: Any = self.settings
        self.tasks: dict[str, Task] = {}
        # Picks the queue of a task that names none: ``router(name, args, kwargs) -> queue | None``
        # (the compat layer's task_routes); None here, so sending asks nothing.
        self.router: Callable[[str, tuple, dict], str | None] | None = None
        self._broker: Broker | None = None
        self.middleware: list[Middleware] = []
        self.hooks = Hooks([])
        self.alert_callbacks: list[Callable[[Any], None]] = []  # app.on_alert, docs/alerts.md
        for m in middleware:
            self.add_middleware(m)
        self.task(_starmap, name="fastq.starmap", bind=True)  # the members of chunks()
        self.task(_accumulate, name=ACCUMULATE)  # the body of a group a task is replaced by
        current.set_app(self)

    def add_middleware(self, middleware: Middleware) -> None:
        """Install ``middleware`` after those installed already (hooks run in install order).
        Install before a worker starts: children see what was installed when they forked."""
        if not isinstance(middleware, Middleware):
            raise TypeError(f"middleware must be a fastq.Middleware instance, not {middleware!r}")
        self.middleware.append(middleware)
        self.hooks = Hooks(self.middleware)

    def on_alert(self, fn: Callable[[Any], None]) -> Callable[[Any], None]:
        """Decorator: call ``fn(alert)`` (a :class:`fastq.alerts.Alert`) for every alert a worker
        of this app sends, besides the ``alert_webhooks`` and ``alert_callbacks`` settings. It runs
        in the worker's alert thread (docs/alerts.md); register it before the worker starts."""
        self.alert_callbacks.append(fn)
        return fn

    def __repr__(self) -> str:
        return f"<fastq.App {self.main}>"

    # -- the broker, connected on first use ----------------------------------------------
    @property
    def broker(self) -> Broker:
        if self._broker is None:
            url = resolve_broker_url(self.settings.broker_url)
            self.settings.broker_url = url
            self._broker = connect(url, self.settings.result_backend)
        return self._broker

    def close(self) -> None:
        if self._broker is not None:
            self._broker.close()
            self._broker = None

    # -- tasks ------------------------------------------------------------------------------
    @overload
    def task(self, fn: Callable) -> Task: ...

    @overload
    def task(self, fn: None = None, **options: Any) -> Callable[[Callable], Task]: ...

    def task(self, fn: Callable | None = None, *, name: str | None = None, **options: Any):
        """Register a function as a task: ``@app.task`` or ``@app.task(name=, queue=, priority=,
        ignore_result=, serializer=, bind=)``."""

        def register(func: Callable) -> Task:
            task_name = name or self._default_name(func)
            task = self.task_class(self, func, task_name, **options)
            self.tasks[task_name] = task
            return task

        return register(fn) if fn is not None else register

    def runs_eagerly(self) -> bool:
        """Whether sending runs the task here instead (Celery's ``task_always_eager``)."""
        return False

    def import_modules(self) -> None:
        """Import the modules of ``include`` (where the tasks are): a worker and a beat call this
        before they start."""
        import importlib

        for module in self.settings.include:
            importlib.import_module(module)

    def setup_logging(self, loglevel: str = "info", logfile: str | None = None) -> None:
        """Set up this process's logging (a worker and a beat call this once the app and its
        modules are imported): fastq's structlog lines at ``loglevel``, and the standard
        library's logging rendered the same way."""
        log.configure(loglevel)
        log.capture_stdlib(loglevel)

    def _default_name(self, func: Callable) -> str:
        module = func.__module__
        if module == "__main__":
            module = self.main
        return f"{module}.{func.__qualname__}"

    def get_task(self, name: str) -> Task:
        try:
            return self.tasks[name]
        except KeyError:
            raise NotRegistered(f"task {name!r} is not registered in {self!r}") from None

    def task_for(self, name: str) -> Task:
        """The registered task, or one that only knows how to send ``name`` (its code runs on
        a worker)."""
        return self.tasks.get(name) or Task(self, _unregistered, name)

    def send_task(self, name: str, args: Any = None, kwargs: dict[str, Any] | None = None,
                  **options: Any) -> AsyncResult:
        """Send a task by name, without needing its code here (Celery's ``send_task``)."""
        return self.task_for(name).apply_async(args, kwargs, **options)

    def signature(self, name: str, args: Any = (), kwargs: dict[str, Any] | None = None,
                  **options: Any) -> Signature:
        """A signature of a task by name (Celery's ``app.signature``)."""
        return Signature(name, args, kwargs, options, app=self)

    def dag(self) -> Dag:
        """A graph of named nodes: ``d = app.dag(); d.add("a", a.s()); d.add("b", b.s(),
        after=["a"]); d.submit()`` (fastq/workflows/dag.py)."""
        return Dag(self)

    def add_periodic_task(self, schedule: Any, sig: Any, args: Any = (),
                          kwargs: dict[str, Any] | None = None, name: str | None = None,
                          **options: Any) -> str:
        """Have ``fastq beat`` send ``sig`` (a Task or task name) on ``schedule`` (seconds, a
        timedelta, ``schedule`` or ``crontab``); Celery's ``add_periodic_task``. See fastq/beat.py."""
        return add_periodic_task(self, schedule, sig, args, kwargs, name, **options)

    def AsyncResult(self, task_id: str) -> AsyncResult:  # noqa: N802 - Celery's name
        return AsyncResult(task_id, self)

    @property
    def control(self) -> Control:
        return Control(self)

    # -- sending ----------------------------------------------------------------------------
    def send_message(self, queue: str, level: int, data: bytes, due_ms: int = 0,
                     message: Message | None = None) -> bool:
        """Send encoded ``data``, or add it to the open batch; True when it was sent now. A
        batched ``message`` gets its ``after_send`` hooks once the batch is written; for one sent
        now, the caller runs them (:meth:`after_send`), after it knows the send succeeded."""
        pending = current.pending_batch()
        if pending is not None:
            pending.items.append((queue, level, data, due_ms))
            if message is not None:
                pending.messages.append(message)
            return False
        if due_ms:
            self.broker.send_delayed(queue, level, data, due_ms)
        else:
            self.broker.send(queue, level, data)
        return True

    def after_send(self, messages: list[Message]) -> None:
        """Run the ``after_send`` hooks for messages that were written."""
        for message in messages:
            for hook in self.hooks.after_send:
                hook(self, message)

    def claim_unique(self, key: str, task_id: str, ttl_ms: int) -> str | None:
        """Take the uniqueness key for ``task_id``; None if taken, else the holder's task id."""
        return self.broker.claim_unique(key, task_id, ttl_ms)

    @contextmanager
    def batch(self, atomic: bool = False) -> Iterator[None]:
        """Collect every message sent inside the block and send them in one pipelined round trip
        when it ends (nothing is sent if the block raises). Nested blocks join the outer one.

        ``atomic=True`` sends them in one Lua script that writes all or none (a failing write, e.g.
        to a key of the wrong type, leaves nothing sent: MULTI/EXEC would not roll back).
        """
        if current.pending_batch() is not None:
            yield
            return
        try:
            with current.capture() as pending:
                yield
        except BaseException:
            self._give_back_claims(pending.items)
            raise
        if pending.items:
            try:
                self.broker.send_many(pending.items, atomic=atomic)
            except Exception:
                if atomic:  # nothing was sent
                    self._give_back_claims(pending.items)
                raise
        if pending.messages:
            self.after_send(pending.messages)

    def _give_back_claims(self, unsent: list) -> None:
        """Release the uniqueness keys claimed by messages that were never sent (the batch block
        raised, or an atomic batch failed): else every send with such a key would be answered,
        until ``unique_for`` runs out, with the id of a task that does not exist."""
        for _queue, _level, data, _due_ms in unsent:
            msg = decode_message(data)
            if msg.idem_key:
                self.broker.release_unique(msg.idem_key, msg.id)


current.set_default_factory(App)
