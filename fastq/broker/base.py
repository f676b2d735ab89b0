"""What a worker and a producer need from a broker. Two implementations: Redis Streams and memory.

A *delivery* is the tuple ``(stream_key, level, entry_id, data)``: where it came from (to ack it),
its priority level, and the envelope bytes (``None`` when the entry was deleted while pending).
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

Delivery = tuple[str, int, bytes, bytes | None]


@dataclass(slots=True)
class Finish:
    """Everything a child owes the broker after running some deliveries, written in one round trip.

    Order matters and is kept by the broker: results first, then dead letters, then acks, so a
    message is never acknowledged before its outcome is stored.
    """

    results: list[tuple[str, bytes]] = field(default_factory=list)  # (task_id, record)
    states: list[tuple[str, bytes]] = field(default_factory=list)  # (task_id, non-terminal record)
    delayed: list[tuple[str, int, int, bytes]] = field(default_factory=list)  # (queue, level, due_ms, data)
    dead: list[tuple[str, dict[str, bytes | str]]] = field(default_factory=list)  # (queue, fields)
    releases: list[tuple[str, str]] = field(default_factory=list)  # (unique key, owner task id)
    acks: dict[str, list[bytes]] = field(default_factory=dict)  # stream_key -> entry ids
    overwrite: set[str] = field(default_factory=set)  # task ids whose result replaces an older one

    def ack(self, stream_key: str, entry_id: bytes) -> None:
        ids = self.acks.get(stream_key)
        if ids is None:
            self.acks[stream_key] = [entry_id]
        else:
            ids.append(entry_id)

    def __bool__(self) -> bool:
        return bool(self.results or self.states or self.delayed or self.dead or self.releases
                    or self.acks)


@dataclass(slots=True)
class StreamStats:
    queue: str
    level: int
    depth: int  # entries in the stream (ready + pending)
    pending: int  # delivered, not yet acknowledged
    oldest_age_ms: int  # age of the oldest entry (0 when empty)


class Broker(Protocol):
    url: str

    def send(self, queue: str, level: int, data: bytes) -> None: ...

    def send_many(self, items: Iterable[tuple[str, int, bytes, int]]) -> None:
        """Send (queue, level, data, due_ms) items in one round trip; due_ms 0 = now."""

    def send_delayed(self, queue: str, level: int, data: bytes, due_ms: int) -> None:
        """Keep the message in the queue's delayed set until ``due_ms`` (epoch ms)."""

    def promote(self, queue: str, now_ms: int, limit: int = 1000) -> tuple[int, int | None]:
        """Move due delayed messages to the streams: (moved, next due ms or None)."""

    def prepare(self, queues: Iterable[str]) -> None:
        """Create what consuming ``queues`` needs (consumer groups)."""

    def fetch(self, consumer: str, queues: list[str], count: int, block_ms: int,
              own_pending: bool = False, counts: list[int] | None = None) -> list[Delivery]: ...

    def finish(self, done: Finish, result_ttl_ms: int) -> None: ...

    def wait_result(self, task_id: str, timeout: float | None) -> bytes | None: ...

    def peek_result(self, task_id: str) -> bytes | None: ...

    def forget_result(self, task_id: str) -> None: ...

    def heartbeat(self, consumer: str, info: bytes, ttl_ms: int) -> None: ...

    def workers(self) -> list[bytes]: ...

    def report_health(self, worker_name: str, info: bytes, ttl_ms: int) -> None: ...

    def health_reports(self) -> list[bytes]: ...

    def queues(self) -> list[str]: ...

    def stats(self, queue: str) -> list[StreamStats]: ...

    def dead_letters(self, queue: str, count: int = 100) -> list[tuple[bytes, dict]]: ...

    def purge(self, queue: str) -> int: ...

    def close(self) -> None: ...
