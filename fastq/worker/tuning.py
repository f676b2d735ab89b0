"""Run-time overrides from remote control, passed from the supervisor to its children.

``app.control.rate_limit`` / ``time_limit`` / ``add_consumer`` / ``cancel_consumer`` reach the
supervisor (fastq/worker/remote.py), but the children are the ones that run tasks and read
queues. The supervisor keeps the overrides and writes them (msgpack) into an anonymous shared
mapping made before forking, then bumps its generation counter; each child compares the counter
once per fetch round (an 8-byte read) and applies the overrides when it changed. A child started
later applies them in its first round, so a restarted child keeps them; a restarted worker
forgets them, as Celery's does.

One writer (the supervisor), and a sequence lock: the counter is odd while the body is being
written, and a reader that sees it odd, or changed by the end of its read, tries again on its next
round.
"""
from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass, field
from typing import Any

import msgpack

SIZE = 1 << 20  # room for the overrides of thousands of task names
_HEAD = struct.Struct("<QI")  # generation, body length


@dataclass
class Overrides:
    """What remote control changed: per task name its rate limit (as given, None: no limit)
    and its time limits in ms (0: none); the queue list, when it changed."""

    rates: dict[str, Any] = field(default_factory=dict)
    limits: dict[str, tuple[int, int]] = field(default_factory=dict)  # name -> (soft, hard)
    queues: list[str] | None = None

    def pack(self) -> bytes:
        return msgpack.packb({"rates": self.rates, "limits": self.limits, "queues": self.queues})

    @classmethod
    def unpack(cls, data: bytes) -> Overrides:
        body = msgpack.unpackb(data)
        return cls(body["rates"], {k: tuple(v) for k, v in body["limits"].items()},
                   body["queues"])


class Tuning:
    """The shared block: :meth:`publish` in the supervisor, :meth:`read` in a child."""

    def __init__(self) -> None:
        self._mm = mmap.mmap(-1, SIZE)
        self.overrides = Overrides()  # the supervisor's copy

    @property
    def generation(self) -> int:
        return _HEAD.unpack_from(self._mm, 0)[0]

    def publish(self) -> None:
        body = self.overrides.pack()
        if _HEAD.size + len(body) > SIZE:
            raise ValueError("too many remote-control overrides for the shared block")
        generation = self.generation
        _HEAD.pack_into(self._mm, 0, generation + 1, 0)  # odd: being written
        self._mm[_HEAD.size:_HEAD.size + len(body)] = body
        _HEAD.pack_into(self._mm, 0, generation + 2, len(body))

    def read(self) -> tuple[int, Overrides | None]:
        """(generation, overrides); None when the block is being written or changed while it
        was read."""
        generation, length = _HEAD.unpack_from(self._mm, 0)
        if generation % 2:
            return generation, None
        body = bytes(self._mm[_HEAD.size:_HEAD.size + length])
        if _HEAD.unpack_from(self._mm, 0)[0] != generation:
            return generation, None
        return generation, Overrides.unpack(body) if length else Overrides()
