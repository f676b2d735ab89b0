"""The App: configuration, the task registry, and the way messages leave the process."""
from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, overload

from fastq.broker import Broker, connect
from fastq.broker.embedded import resolve_broker_url
from fastq.config import Settings
from fastq.errors import NotRegistered
from fastq.result import AsyncResult
from fastq.task import Task

_current: App | None = None
_batch: contextvars.ContextVar[list | None] = contextvars.ContextVar("fastq_batch", default=None)


def _unregistered(*_args: Any, **_kwargs: Any) -> None:
    raise NotRegistered("this task is not registered in this process; it runs on a worker")


def current_app() -> App:
    """The most recently created App (Celery's ``current_app``); a default one if none exists."""
    return _current if _current is not None else App()


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

    def set_priority(self, task_id: str, priority: int | str, queue: str | None = None) -> bool:
        """Move a task that is still waiting in its queue to another priority level; False when
        it is no longer waiting (running, done, delayed) or not found."""
        from fastq.task import resolve_priority

        return self.app.broker.set_priority(queue or self.app.conf.default_queue, task_id,
                                            resolve_priority(priority))


class App:
    """``App("proj", broker="redis://...")``; settings are the fields of :class:`fastq.config.Settings`."""

    task_class: type[Task] = Task

    def __init__(self, main: str = "fastq", broker: str | None = None,
                 result_backend: str | None = None, **settings: Any):
        global _current
        self.main = main
        self.conf = Settings.from_env(broker_url=broker, result_backend=result_backend, **settings)
        self.tasks: dict[str, Task] = {}
        self._broker: Broker | None = None
        _current = self

    def __repr__(self) -> str:
        return f"<fastq.App {self.main}>"

    # -- the broker, connected on first use ----------------------------------------------
    @property
    def broker(self) -> Broker:
        if self._broker is None:
            url = resolve_broker_url(self.conf.broker_url)
            self.conf.broker_url = url
            self._broker = connect(url, self.conf.result_backend)
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

    def send_task(self, name: str, args: Any = None, kwargs: dict[str, Any] | None = None,
                  **options: Any) -> AsyncResult:
        """Send a task by name, without needing its code here (Celery's ``send_task``)."""
        task = self.tasks.get(name) or Task(self, _unregistered, name)
        return task.apply_async(args, kwargs, **options)

    def add_periodic_task(self, schedule: Any, sig: Any, args: Any = (),
                          kwargs: dict[str, Any] | None = None, name: str | None = None,
                          **options: Any) -> str:
        """Have ``fastq beat`` send ``sig`` (a Task or task name) on ``schedule`` (seconds, a
        timedelta, ``schedule`` or ``crontab``); Celery's ``add_periodic_task``. See fastq/beat.py."""
        from fastq.beat import add_periodic_task

        return add_periodic_task(self, schedule, sig, args, kwargs, name, **options)

    def AsyncResult(self, task_id: str) -> AsyncResult:  # noqa: N802 - Celery's name
        return AsyncResult(task_id, self)

    @property
    def control(self) -> Control:
        return Control(self)

    # -- sending ----------------------------------------------------------------------------
    def send_message(self, queue: str, level: int, data: bytes, due_ms: int = 0) -> None:
        pending = _batch.get()
        if pending is not None:
            pending.append((queue, level, data, due_ms))
        elif due_ms:
            self.broker.send_delayed(queue, level, data, due_ms)
        else:
            self.broker.send(queue, level, data)

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
        if _batch.get() is not None:
            yield
            return
        pending: list = []
        token = _batch.set(pending)
        try:
            yield
        except BaseException:
            self._give_back_claims(pending)
            raise
        finally:
            _batch.reset(token)
        if pending:
            try:
                self.broker.send_many(pending, atomic=atomic)
            except Exception:
                if atomic:  # nothing was sent
                    self._give_back_claims(pending)
                raise

    def _give_back_claims(self, unsent: list) -> None:
        """Release the uniqueness keys claimed by messages that were never sent (the batch block
        raised, or an atomic batch failed): else every send with such a key would be answered,
        until ``unique_for`` runs out, with the id of a task that does not exist."""
        from fastq._core import decode_message

        for _queue, _level, data, _due_ms in unsent:
            msg = decode_message(data)
            if msg.idem_key:
                self.broker.release_unique(msg.idem_key, msg.id)
