"""An in-process broker for ``memory://`` URLs: for unit tests, not production.

It keeps everything in this process's memory (no persistence, nothing shared between processes) and
mimics what :class:`fastq.broker.redis.RedisBroker` does with Redis Streams and one consumer group:
per (queue, level) an ordered stream of entries with ids ``b"<ms>-<seq>"``; a read hands out new
entries and records them as pending for the reading consumer until they are acknowledged (and
deleted); ``own_pending`` re-reads a consumer's pending entries, as after a crash. All state sits
behind one :class:`threading.Condition`, so producers, a worker thread and waiters on results may
share one broker. ``MemoryBroker.named(url)`` gives every ``App(broker=url)`` of the process the
same instance; ``clear()`` empties one broker and ``MemoryBroker.reset()`` every named one.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterable
from typing import ClassVar

from fastq import keys
from fastq.broker.base import Delivery, Finish, StreamStats


def _id_ms(entry_id: bytes) -> int:
    return int(entry_id[:entry_id.index(b"-")])


def _as_bytes(value: object) -> bytes:
    """A field as Redis would hand it back: bytes (str as UTF-8, numbers as their text)."""
    if isinstance(value, bytes):
        return value
    return (value if isinstance(value, str) else str(value)).encode()


class _Stream:
    """One stream and its consumer group: entries in id order, the not yet delivered ids, and the
    pending entries (delivered, not acknowledged) with the consumer that holds each."""

    __slots__ = ("entries", "ready", "pending")

    def __init__(self) -> None:
        self.entries: dict[bytes, bytes] = {}  # insertion order is id order
        self.ready: deque[bytes] = deque()
        self.pending: dict[bytes, str] = {}


class MemoryBroker:
    """The Broker protocol in one process (see the module docstring). Not for production."""

    _named: ClassVar[dict[str, MemoryBroker]] = {}
    _named_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, url: str = "memory://"):
        self.url = url
        self._cond = threading.Condition()
        self._last_id = (0, 0)
        self.clear()

    @classmethod
    def named(cls, url: str) -> MemoryBroker:
        """The broker of this process for ``url`` (created on first use)."""
        with cls._named_lock:
            broker = cls._named.get(url)
            if broker is None:
                broker = cls._named[url] = cls(url)
            return broker

    @classmethod
    def reset(cls) -> None:
        """Empty every named memory broker of this process (e.g. between tests)."""
        with cls._named_lock:
            brokers = list(cls._named.values())
        for broker in brokers:
            broker.clear()

    def clear(self) -> None:
        """Drop all streams, pending entries, results, dead letters, heartbeats and queue names."""
        with self._cond:
            self._streams: dict[str, _Stream] = {}
            self._known_queues: set[str] = set()
            self._results: dict[str, tuple[list[bytes], float]] = {}  # id -> (records, expires)
            self._dead: dict[str, list[tuple[bytes, dict[bytes, bytes]]]] = {}
            self._workers: dict[str, tuple[bytes, float]] = {}  # consumer -> (info, expires)
            self._cond.notify_all()

    # -- helpers (call with the lock held) -----------------------------------------------------
    def _next_id(self) -> bytes:
        """Like XADD ``*``: the clock in ms, with a sequence number when the clock has not moved."""
        ms, seq = int(time.time() * 1000), 0
        if ms <= self._last_id[0]:
            ms, seq = self._last_id[0], self._last_id[1] + 1
        self._last_id = (ms, seq)
        return f"{ms}-{seq}".encode()

    def _stream(self, key: str) -> _Stream:
        stream = self._streams.get(key)
        if stream is None:
            stream = self._streams[key] = _Stream()
        return stream

    def _add(self, queue: str, level: int, data: bytes) -> None:
        self._known_queues.add(queue)
        stream = self._stream(keys.stream(queue, level))
        entry_id = self._next_id()
        stream.entries[entry_id] = data
        stream.ready.append(entry_id)

    def _live_result(self, task_id: str) -> list[bytes] | None:
        item = self._results.get(task_id)
        if item is not None and item[1] <= time.monotonic():  # expired (PEXPIRE)
            del self._results[task_id]
            return None
        return item[0] if item else None

    # -- producing -----------------------------------------------------------------------------
    def send(self, queue: str, level: int, data: bytes) -> None:
        with self._cond:
            self._add(queue, level, data)
            self._cond.notify_all()

    def send_many(self, items: Iterable[tuple[str, int, bytes]]) -> None:
        with self._cond:
            for queue, level, data in items:
                self._add(queue, level, data)
            self._cond.notify_all()

    # -- consuming -----------------------------------------------------------------------------
    def prepare(self, queues: Iterable[str]) -> None:
        with self._cond:
            for queue in queues:
                self._known_queues.add(queue)
                for key in keys.streams(queue):
                    self._stream(key)

    def fetch(self, consumer: str, queues: list[str], count: int, block_ms: int,
              own_pending: bool = False) -> list[Delivery]:
        """Up to ``count`` entries per stream (blocking up to ``block_ms`` when none is ready);
        ``own_pending`` re-reads this consumer's pending entries instead, without blocking."""
        stream_keys = [k for q in queues for k in keys.streams(q)]
        with self._cond:
            streams = [(key, self._stream(key)) for key in stream_keys]
            if own_pending:
                out: list[Delivery] = []
                for key, s in streams:
                    mine = [eid for eid, owner in s.pending.items() if owner == consumer][:count]
                    level = keys.parse_stream(key)[1]
                    out += [(key, level, eid, s.entries.get(eid)) for eid in mine]
                return out
            if block_ms:
                self._cond.wait_for(lambda: any(s.ready for _, s in streams), block_ms / 1000.0)
            out = []
            for key, s in streams:
                level = keys.parse_stream(key)[1]
                taken = 0
                while s.ready and taken < count:
                    eid = s.ready.popleft()
                    if eid in s.entries:  # skip ids deleted before delivery
                        s.pending[eid] = consumer
                        out.append((key, level, eid, s.entries[eid]))
                        taken += 1
            return out

    def finish(self, done: Finish, result_ttl_ms: int) -> None:
        """Results first, then dead letters, then ack + delete; waiters are woken once."""
        with self._cond:
            expires = time.monotonic() + result_ttl_ms / 1000.0
            for task_id, record in done.results:
                records = self._live_result(task_id) or []
                records.append(record)
                self._results[task_id] = (records, expires)
            for queue, fields in done.dead:
                flat = {_as_bytes(k): _as_bytes(v) for k, v in fields.items()}
                self._dead.setdefault(queue, []).append((self._next_id(), flat))
            for skey, ids in done.acks.items():
                s = self._stream(skey)
                for eid in ids:
                    s.pending.pop(eid, None)
                    s.entries.pop(eid, None)
            self._cond.notify_all()

    # -- results -------------------------------------------------------------------------------
    def wait_result(self, task_id: str, timeout: float | None) -> bytes | None:
        """The first record of the task, waiting up to ``timeout`` s (None: forever, <= 0: peek)."""
        with self._cond:
            if timeout is None or timeout > 0:
                self._cond.wait_for(lambda: self._live_result(task_id) is not None, timeout)
            records = self._live_result(task_id)
            return records[0] if records else None

    def peek_result(self, task_id: str) -> bytes | None:
        return self.wait_result(task_id, 0)

    def forget_result(self, task_id: str) -> None:
        with self._cond:
            self._results.pop(task_id, None)

    # -- monitoring and housekeeping -----------------------------------------------------------
    def heartbeat(self, consumer: str, info: bytes, ttl_ms: int) -> None:
        with self._cond:
            self._workers[consumer] = (info, time.monotonic() + ttl_ms / 1000.0)

    def workers(self) -> list[bytes]:
        now = time.monotonic()
        with self._cond:
            return [info for info, expires in self._workers.values() if expires > now]

    def queues(self) -> list[str]:
        with self._cond:
            return sorted(self._known_queues)

    def stats(self, queue: str) -> list[StreamStats]:
        now = int(time.time() * 1000)
        out = []
        with self._cond:
            for level, key in enumerate(keys.streams(queue)):
                s = self._streams.get(key) or _Stream()
                oldest = next(iter(s.entries), None)
                age = now - _id_ms(oldest) if oldest is not None else 0
                out.append(StreamStats(queue, level, len(s.entries), len(s.pending), max(age, 0)))
        return out

    def dead_letters(self, queue: str, count: int = 100) -> list[tuple[bytes, dict]]:
        """Like XRANGE on the dead-letter stream: ``[(entry_id, {b"field": b"value"})]``."""
        with self._cond:
            return [(eid, dict(fields)) for eid, fields in self._dead.get(queue, [])[:count]]

    def purge(self, queue: str) -> int:
        """Drop the entries of ``queue`` not yet delivered (all levels); pending ones stay."""
        removed = 0
        with self._cond:
            for key in keys.streams(queue):
                s = self._streams.get(key)
                if s is None:
                    continue
                removed += sum(s.entries.pop(eid, None) is not None for eid in s.ready)
                s.ready.clear()
        return removed

    def close(self) -> None:
        """Nothing to release; the data stays until :meth:`clear` (``App.close()`` reconnects to
        the same named broker)."""
