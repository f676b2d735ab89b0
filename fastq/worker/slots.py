"""Shared memory between the supervisor and its children: what each child is doing right now.

One fixed-size record per child slot in an anonymous shared mmap made before forking. A child
writes it when it starts and ends a task and once per fetch round; the supervisor reads it to
enforce hard time limits, stop revoked tasks, release prefetched messages held behind a long task,
and notice a fetch loop that has gone quiet. No locks: each slot has one writer, and a torn read is
harmless because the supervisor re-checks before acting.
"""
from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass

# started, hard deadline, last loop (time.monotonic(), 0 = none), entry id, stream key, task id
_RECORD = struct.Struct("<ddd40s160s64s")


@dataclass(slots=True)
class SlotState:
    started: float
    deadline: float
    last_loop: float
    entry: bytes
    stream: str
    task_id: str

    @property
    def busy(self) -> bool:
        return self.started > 0


CAPACITY = 256  # records mapped before forking: how far remote control can grow the pool


class Slots:
    """``count`` is the slots in use (one past the highest a child has); the mapping holds
    ``capacity`` of them, so the pool can grow after the fork (``pool_grow``)."""

    def __init__(self, count: int, capacity: int = CAPACITY):
        self.count = count
        self.capacity = max(count, capacity, 1)
        self._mm = mmap.mmap(-1, self.capacity * _RECORD.size)

    def _offset(self, slot: int) -> int:
        return slot * _RECORD.size

    def begin(self, slot: int, started: float, deadline: float, entry: bytes, stream: str,
              task_id: str, last_loop: float) -> None:
        _RECORD.pack_into(self._mm, self._offset(slot), started, deadline, last_loop, entry,
                          stream.encode(), task_id.encode())

    def end(self, slot: int, last_loop: float) -> None:
        _RECORD.pack_into(self._mm, self._offset(slot), 0.0, 0.0, last_loop, b"", b"", b"")

    def loop(self, slot: int, now: float) -> None:
        struct.pack_into("<d", self._mm, self._offset(slot) + 16, now)

    def read(self, slot: int) -> SlotState:
        started, deadline, last, entry, stream, task_id = _RECORD.unpack_from(self._mm,
                                                                             self._offset(slot))
        return SlotState(started, deadline, last, entry.rstrip(b"\0"),
                         stream.rstrip(b"\0").decode(errors="replace"),
                         task_id.rstrip(b"\0").decode(errors="replace"))

    def clear(self, slot: int, now: float) -> None:
        self.end(slot, now)
