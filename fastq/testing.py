"""Helpers for unit-testing tasks: run a worker in this process, on ``memory://`` (or Redis).

``drain(app)`` runs everything sent so far (and what those tasks send) in the calling thread and
returns when the queues are empty; ``worker_thread(app)`` serves in a background thread for as long
as a ``with`` block lasts, for tests that block on ``AsyncResult.get(timeout=...)``;
``RedisServer()`` starts a private redis-server (or valkey-server) on a free port, for integration
tests. See docs/testing.md.
"""
from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from fastq.broker.embedded import RedisServer
from fastq.worker.child import Child

if TYPE_CHECKING:
    from fastq.app import App
    from fastq.broker import Broker

_thread_ids = itertools.count(1)


def _queues(app: App, queues: str | Iterable[str] | None) -> list[str]:
    """The given queues, or: the default queue, every queue a task names, every queue sent to."""
    if isinstance(queues, str):
        return [q for q in queues.split(",") if q]
    if queues is not None:
        return list(queues)
    named = {t.queue for t in app.tasks.values() if t.queue}
    return sorted({app.conf.default_queue, *named, *app.broker.queues()})


def _busy(broker: Broker, queues: list[str]) -> int:
    """Messages still waiting or in flight (any consumer) in ``queues``."""
    return sum(st.depth + st.pending for q in queues for st in broker.stats(q))


def _delayed_before(broker: Broker, queues: list[str], until_ms: float) -> bool:
    """Move due delayed messages (retries, countdowns) of ``queues`` into their streams; True if
    one is still waiting to fall due by ``until_ms`` (epoch ms)."""
    now_ms = int(time.time() * 1000)
    for q in queues:
        moved, next_due = broker.promote(q, now_ms)
        if moved or (next_due is not None and next_due <= until_ms):
            return True
    return False


def _close_loop(child: Child) -> None:
    if child._loop is not None:  # the event loop async tasks ran on
        child._loop.close()


def drain(app: App, queues: str | Iterable[str] | None = None, timeout: float = 5.0) -> int:
    """Run tasks in this thread until ``queues`` hold nothing ready or pending; return how many
    tasks ran (succeeded or failed; dead-lettered messages are not counted).

    Tasks sent by the tasks themselves are run too, and delayed messages (countdown, eta, retries)
    that fall due within ``timeout`` are waited for; later ones are left delayed. Raises
    ``TimeoutError`` if the queues are not empty after ``timeout`` seconds (e.g. another consumer
    holds messages it never acknowledges).
    """
    qs = _queues(app, queues)
    child = Child(app, "testing:drain", qs, handle_signals=False)
    deadline = time.monotonic() + timeout
    until_ms = time.time() * 1000 + timeout * 1000
    try:
        child.broker.prepare(qs)
        child.recover_own_pending()
        while (child.run_once(10) or _busy(child.broker, qs)
               or _delayed_before(child.broker, qs, until_ms)):
            if time.monotonic() > deadline:
                raise TimeoutError(f"drain: {_busy(child.broker, qs)} message(s) still ready or "
                                   f"pending in {qs} after {timeout} s")
    finally:
        child.flush()
        _close_loop(child)
    return child.processed + child.failed


@contextmanager
def worker_thread(app: App, queues: str | Iterable[str] | None = None,
                  join_timeout: float = 10.0) -> Iterator[Child]:
    """Serve ``queues`` in a daemon thread while the block runs; yields the :class:`Child`.

    On exit the worker stops warm (its current batch is finished and acknowledged). An exception
    that ended the worker thread is re-raised here. Default queues are computed at start (see
    :func:`drain`); name any other queue explicitly.
    """
    child = Child(app, f"testing:thread:{next(_thread_ids)}", _queues(app, queues),
                  handle_signals=False)  # signal handlers can only be set in the main thread
    # Block briefly per fetch so that stop() takes effect quickly (the app's settings stay as is).
    child.conf = app.settings.model_copy(update={"block_ms": min(app.settings.block_ms, 50)})
    errors: list[BaseException] = []

    def serve() -> None:
        try:
            child.run()
        except BaseException as exc:  # noqa: BLE001 - handed to the test on exit
            errors.append(exc)
        finally:
            _close_loop(child)

    thread = threading.Thread(target=serve, name=child.consumer, daemon=True)
    thread.start()
    try:
        yield child
    finally:
        child.stop()
        thread.join(join_timeout)
    if thread.is_alive():
        raise TimeoutError(f"worker thread {child.consumer} did not stop in {join_timeout} s")
    if errors:
        raise errors[0]


__all__ = ["RedisServer", "drain", "worker_thread"]
