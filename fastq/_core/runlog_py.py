"""A round's task runs for fastq's event stream (fastq/events/records.py), packed as they end:
the pure twin of ``runlog.pyx``.

``take()`` gives exactly ``msgpack.packb(runs, default=repr)`` of the runs added since the last
take, each run ``(envelope, queue, outcome, started, ended, info)``. ``after_execute`` is the
middleware hook itself (fastq/events/publisher.py installs it): a success is recorded here,
without a Python frame in the Cython twin (the child's envelope as read, its start,
``time.monotonic()`` as its end, the result's repr cut to ``repr_max``); any other run goes to
``other(task, message, result, exc)``, which works out its outcome and calls :meth:`add`.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import msgpack

SUCCEEDED = "task-succeeded"


class RunLog:
    def __init__(self, child: Any = None, other: Callable[..., None] | None = None,
                 repr_max: int = 1024):
        self.child, self.other, self.repr_max = child, other, repr_max
        self._runs: list[bytes] = []

    def __len__(self) -> int:
        return len(self._runs)

    def add(self, envelope: Any, queue: Any, outcome: Any, started: Any, ended: Any,
            info: Any) -> None:
        self._runs.append(msgpack.packb((envelope, queue, outcome, started, ended, info),
                                        default=repr))

    def after_execute(self, task: Any, message: Any, result: Any = None,
                      exc: BaseException | None = None) -> None:
        child = self.child
        if exc is not None or child is None:
            if self.other is not None:
                self.other(task, message, result, exc)
            return
        text = repr(result)
        if len(text) > self.repr_max:
            text = text[:self.repr_max - 3] + "..."
        self.add(child.current_data, message.queue, SUCCEEDED, child.task_started,
                 time.monotonic(), text)

    def take(self) -> bytes:
        runs, self._runs = self._runs, []
        return _array_header(len(runs)) + b"".join(runs)


def _array_header(n: int) -> bytes:
    """msgpack's header of an array of ``n`` items (fixarray, array 16, array 32)."""
    if n < 16:
        return bytes([0x90 | n])
    if n < 0x10000:
        return b"\xdc" + n.to_bytes(2, "big")
    return b"\xdd" + n.to_bytes(4, "big")
