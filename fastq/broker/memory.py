"""An in-process broker for ``memory://`` URLs: for unit tests, not production.

It keeps everything in this process's memory (no persistence, nothing shared between processes) and
mimics what :class:`fastq.broker.redis.RedisBroker` does with Redis Streams and one consumer group:
per (queue, level) an ordered stream of entries with ids ``b"<ms>-<seq>"``; a read hands out new
entries and records them as pending for the reading consumer (with a delivery count and the time of
the last delivery, like XPENDING) until they are acknowledged (and deleted); ``own_pending`` re-reads
a consumer's pending entries, as after a crash. Every public method of the Redis broker is here with
the same semantics: delayed sets (promote.lua), uniqueness keys (unique_claim.lua, release.lua),
non-terminal states, revocations, lease reclaim/renew/hand-back, reprioritizing, and token buckets
for rate limits (:meth:`MemoryBroker.rate_limiter`, the twin of :class:`fastq.ratelimit.RateLimiter`).

Nothing runs the supervisor's delayed mover in-process, so :meth:`MemoryBroker.fetch` first promotes
the due delayed messages of the queues it reads, and a blocking fetch also wakes when the next
delayed message of those queues falls due.

All state sits behind one :class:`threading.Condition`, so producers, a worker thread and waiters on
results may share one broker. ``MemoryBroker.named(url)`` gives every ``App(broker=url)`` of the
process the same instance; ``clear()`` empties one broker and ``MemoryBroker.reset()`` every named
one.
"""
from __future__ import annotations

import heapq
import math
import threading
import time
from collections import deque
from collections.abc import Iterable
from typing import ClassVar

from fastq import keys
from fastq.broker.base import Delivery, Finish, StreamStats
from fastq.ratelimit import DEFAULT_BURST_S, capacity, check_request

_REVOCATIONS_MAX = 10_000  # the Redis stream is trimmed to about this many entries
_HANDBACK_MAX = 10_000  # handback.lua / renew.lua look at this many pending entries per stream


def _id_ms(entry_id: bytes) -> int:
    return int(entry_id[:entry_id.index(b"-")])


def _id_key(entry_id: bytes | str) -> tuple[int, int]:
    """An entry id as a sortable (ms, seq)."""
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


def _as_bytes(value: object) -> bytes:
    """A field as Redis would hand it back: bytes (str as UTF-8, numbers as their text)."""
    if isinstance(value, bytes):
        return value
    return (value if isinstance(value, str) else str(value)).encode()


def _now_ms() -> int:
    return int(time.time() * 1000)


def _delayed_member(level: int, data: bytes) -> bytes:
    """A delayed-set member: the priority level byte, then the envelope (as the Redis broker)."""
    return bytes((level,)) + data


class _Pending:
    """One entry of a consumer group's pending list: owner, last delivery (monotonic ms), count."""

    __slots__ = ("consumer", "delivered", "count")

    def __init__(self, consumer: str, delivered: float, count: int = 1):
        self.consumer = consumer
        self.delivered = delivered
        self.count = count


class _Stream:
    """One stream and its consumer group: entries in id order, the not yet delivered ids, and the
    pending entries (delivered, not acknowledged)."""

    __slots__ = ("entries", "ready", "pending")

    def __init__(self) -> None:
        self.entries: dict[bytes, bytes] = {}  # insertion order is id order
        self.ready: deque[bytes] = deque()  # may hold ids deleted since (skipped on delivery)
        self.pending: dict[bytes, _Pending] = {}

    def has_ready(self) -> bool:
        while self.ready and self.ready[0] not in self.entries:
            self.ready.popleft()
        return bool(self.ready)


class _Delayed:
    """A queue's delayed set, like a sorted set: member -> due ms, ordered by (due, member)."""

    __slots__ = ("due", "heap")

    def __init__(self) -> None:
        self.due: dict[bytes, int] = {}
        self.heap: list[tuple[int, bytes]] = []  # may hold stale (due, member) pairs

    def add(self, member: bytes, due_ms: int) -> None:
        self.due[member] = due_ms  # ZADD: an identical member only gets its score updated
        heapq.heappush(self.heap, (due_ms, member))

    def first(self) -> tuple[int, bytes] | None:
        heap = self.heap
        while heap and self.due.get(heap[0][1]) != heap[0][0]:
            heapq.heappop(heap)
        return heap[0] if heap else None

    def pop_first(self) -> bytes:
        _due, member = heapq.heappop(self.heap)
        del self.due[member]
        return member


class MemoryRateLimiter:
    """Token buckets in this process: the twin of :class:`fastq.ratelimit.RateLimiter`.

    Same arguments, same results, same arithmetic as ``lua/rate_acquire.lua`` (including the idle
    expiry of a bucket), with this process's wall clock standing in for the Redis server's.
    Limiters made by one :class:`MemoryBroker` (:meth:`MemoryBroker.rate_limiter`) share its
    buckets, as every worker shares the Redis ones.
    """

    def __init__(self, burst_s: float = DEFAULT_BURST_S,
                 buckets: dict[str, tuple[float, float, float]] | None = None,
                 lock: threading.Lock | None = None):
        if not (burst_s >= 0 and math.isfinite(burst_s)):
            raise ValueError(f"burst_s must be a finite number >= 0, not {burst_s!r}")
        self.burst_s = burst_s
        self._buckets = {} if buckets is None else buckets  # key -> (tokens, ts, expires)
        self._lock = lock or threading.Lock()

    def acquire(self, key: str, rate_per_s: float | None, n: int = 1, now_ms: int | None = None,
                burst_s: float | None = None) -> tuple[int, int]:
        """Take up to ``n`` tokens from the bucket ``key`` refilled at ``rate_per_s``: returns
        ``(granted, wait_ms)`` exactly as :meth:`fastq.ratelimit.RateLimiter.acquire` does."""
        if rate_per_s is None:
            return n, 0
        check_request(rate_per_s, n)
        cap = capacity(float(rate_per_s), self.burst_s if burst_s is None else burst_s)
        per_ms = float(rate_per_s) / 1000
        with self._lock:
            clock = time.monotonic()
            now = time.time() * 1000 if now_ms is None else float(int(now_ms))
            state = self._buckets.get(key)
            if state is not None and state[2] <= clock:  # PEXPIRE ran out: idle, hence full
                state = None
            if state is None:
                tokens, ts = cap, now
            else:
                tokens, ts = state[0], state[1]
                if now > ts:
                    tokens = min(cap, tokens + (now - ts) * per_ms)
                    ts = now
            tokens = min(tokens, cap)
            granted = max(0, min(n, math.floor(tokens + 1e-9)))
            tokens -= granted
            wait = math.ceil((1 - tokens) / per_ms - 1e-9) if tokens < 1 else 0
            ttl_ms = math.ceil(cap / per_ms) + 1000
            self._buckets[key] = (tokens, ts, clock + ttl_ms / 1000.0)
        return int(granted), int(wait)


class MemoryBroker:
    """The Broker protocol in one process (see the module docstring). Not for production."""

    _named: ClassVar[dict[str, MemoryBroker]] = {}
    _named_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, url: str = "memory://"):
        self.url = url
        self._cond = threading.Condition()
        self._last_id = (0, 0)
        self._buckets: dict[str, tuple[float, float, float]] = {}
        self._buckets_lock = threading.Lock()
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
        """Drop all streams, delayed messages, pending entries, results, states, dead letters,
        uniqueness keys, revocations, rate-limit buckets, heartbeats and queue names."""
        with self._cond:
            self._streams: dict[str, _Stream] = {}
            self._delayed: dict[str, _Delayed] = {}
            self._known_queues: set[str] = set()
            self._results: dict[str, tuple[list[bytes], float]] = {}  # id -> (records, expires)
            self._states: dict[str, tuple[bytes, float]] = {}  # id -> (record, expires)
            self._dead: dict[str, list[tuple[bytes, dict[bytes, bytes]]]] = {}
            self._unique: dict[str, tuple[str, float]] = {}  # key -> (owner task id, expires)
            self._revoked: dict[str, float] = {}  # task id -> epoch s until which it is revoked
            # (entry id, task id, until, terminate), like the revocations stream
            self._revocations: deque[tuple[bytes, str, float, bool]] = deque(
                maxlen=_REVOCATIONS_MAX)
            self._workers: dict[str, tuple[bytes, float]] = {}  # consumer -> (info, expires)
            self._health: dict[str, tuple[bytes, float]] = {}  # worker -> (record, expires)
            with self._buckets_lock:
                self._buckets.clear()
            self._cond.notify_all()

    # -- helpers (call with the lock held) -----------------------------------------------------
    def _next_id(self) -> bytes:
        """Like XADD ``*``: the clock in ms, with a sequence number when the clock has not moved."""
        ms, seq = _now_ms(), 0
        if ms <= self._last_id[0]:
            ms, seq = self._last_id[0], self._last_id[1] + 1
        self._last_id = (ms, seq)
        return f"{ms}-{seq}".encode()

    def _stream(self, key: str) -> _Stream:
        stream = self._streams.get(key)
        if stream is None:
            stream = self._streams[key] = _Stream()
        return stream

    def _xadd(self, key: str, data: bytes) -> bytes:
        stream = self._stream(key)
        entry_id = self._next_id()
        stream.entries[entry_id] = data
        stream.ready.append(entry_id)
        return entry_id

    def _add(self, queue: str, level: int, data: bytes) -> None:
        self._known_queues.add(queue)
        self._xadd(keys.stream(queue, level), data)

    def _add_delayed(self, queue: str, level: int, data: bytes, due_ms: int) -> None:
        delayed = self._delayed.get(queue)
        if delayed is None:
            delayed = self._delayed[queue] = _Delayed()
        delayed.add(_delayed_member(level, data), int(due_ms))

    def _promote(self, queue: str, now_ms: int, limit: int) -> tuple[int, int | None]:
        """promote.lua: move up to ``limit`` members due by ``now_ms`` to the streams."""
        delayed = self._delayed.get(queue)
        if delayed is None:
            return 0, None
        moved = 0
        while moved < limit:
            first = delayed.first()
            if first is None or first[0] > now_ms:
                break
            member = delayed.pop_first()
            level = member[0] if member and member[0] <= 4 else 2
            self._xadd(keys.stream(queue, level), member[1:])
            moved += 1
        first = delayed.first()
        if first is None:
            del self._delayed[queue]
        return moved, first[0] if first else None

    def _promote_all(self, queues: Iterable[str]) -> int | None:
        """Promote everything due in ``queues``; the earliest remaining due time, if any."""
        now_ms = _now_ms()
        soonest = None
        for queue in dict.fromkeys(queues):
            _moved, next_due = self._promote(queue, now_ms, 1 << 62)
            if next_due is not None and (soonest is None or next_due < soonest):
                soonest = next_due
        return soonest

    def _live_result(self, task_id: str) -> list[bytes] | None:
        item = self._results.get(task_id)
        if item is not None and item[1] <= time.monotonic():  # expired (PEXPIRE)
            del self._results[task_id]
            return None
        return item[0] if item else None

    def _release(self, key: str, task_id: str) -> None:
        """release.lua: delete the key only if ``task_id`` still owns it."""
        held = self._unique.get(key)
        if held is not None and held[0] == task_id and held[1] > time.monotonic():
            del self._unique[key]

    def _pending_of(self, consumer: str, queues: Iterable[str]) -> Iterable[tuple[str, _Stream,
                                                                              list[bytes]]]:
        """(stream key, stream, ids pending for ``consumer`` in id order) per existing stream."""
        for queue in queues:
            for key in keys.streams(queue):
                s = self._streams.get(key)
                if s is None or not s.pending:
                    continue
                mine = sorted((eid for eid, p in s.pending.items() if p.consumer == consumer),
                              key=_id_key)
                yield key, s, mine

    # -- producing -----------------------------------------------------------------------------
    def send(self, queue: str, level: int, data: bytes) -> None:
        with self._cond:
            self._add(queue, level, data)
            self._cond.notify_all()

    def send_delayed(self, queue: str, level: int, data: bytes, due_ms: int) -> None:
        """Keep the message in the queue's delayed set until ``due_ms`` (epoch ms)."""
        with self._cond:
            self._known_queues.add(queue)
            self._add_delayed(queue, level, data, due_ms)
            self._cond.notify_all()  # a blocked fetch may have to wake sooner

    def send_many(self, items: Iterable[tuple[str, int, bytes, int]], atomic: bool = False) -> None:
        """Send (queue, level, data, due_ms) items; due_ms 0 = now, else delayed until then.

        All or none either way: the items are read in full before any is added, under one lock
        (``atomic`` is accepted for the Redis broker's MULTI/EXEC)."""
        batch = [(queue, level, data, due_ms) for queue, level, data, due_ms in items]
        with self._cond:
            for queue, level, data, due_ms in batch:
                if due_ms:
                    self._known_queues.add(queue)
                    self._add_delayed(queue, level, data, due_ms)
                else:
                    self._add(queue, level, data)
            self._cond.notify_all()

    def promote(self, queue: str, now_ms: int, limit: int = 1000) -> tuple[int, int | None]:
        """Move due delayed messages to the streams: (moved, next due ms or None)."""
        with self._cond:
            moved, next_due = self._promote(queue, now_ms, limit)
            if moved:
                self._cond.notify_all()
            return moved, next_due

    def set_priority(self, queue: str, task_id: str, level: int) -> bool:
        """Move a task that is still waiting in ``queue`` to priority ``level`` (its envelope's
        priority byte is rewritten); False if it is not waiting there (already delivered,
        delayed, or unknown). True without a move when it already waits at ``level``."""
        from fastq._core import decode_message
        from fastq.errors import DecodeError

        with self._cond:
            for key in keys.streams(queue):
                s = self._streams.get(key)
                if s is None:
                    continue
                for entry_id, data in list(s.entries.items()):
                    try:
                        found = decode_message(data).id == task_id
                    except DecodeError:
                        continue
                    if not found:
                        continue
                    if key == keys.stream(queue, level):
                        return True
                    # reprioritize.lua
                    if entry_id in s.pending or len(data) < 4:
                        return False
                    self._xadd(keys.stream(queue, level), data[:3] + bytes((level,)) + data[4:])
                    del s.entries[entry_id]
                    self._cond.notify_all()
                    return True
        return False

    def claim_unique(self, key: str, task_id: str, ttl_ms: int) -> str | None:
        """Take the uniqueness ``key`` for ``task_id`` for ``ttl_ms``: None when taken, else the
        id of the task that holds it (unique_claim.lua)."""
        if ttl_ms <= 0:  # SET ... PX 0 is an error in Redis too
            raise ValueError(f"invalid expire time for unique key {key!r}: {ttl_ms} ms")
        with self._cond:
            now = time.monotonic()
            held = self._unique.get(key)
            if held is not None and held[1] > now:
                return held[0]
            self._unique[key] = (task_id, now + ttl_ms / 1000.0)
            return None

    def release_unique(self, key: str, task_id: str) -> None:
        with self._cond:
            self._release(key, task_id)

    # -- consuming -----------------------------------------------------------------------------
    def prepare(self, queues: Iterable[str]) -> None:
        with self._cond:
            for queue in queues:
                self._known_queues.add(queue)
                for key in keys.streams(queue):
                    self._stream(key)

    def fetch(self, consumer: str, queues: list[str], count: int, block_ms: int,
              own_pending: bool = False, counts: list[int] | None = None) -> list[Delivery]:
        """Up to ``count`` entries per stream (blocking up to ``block_ms`` when none is ready), or
        with ``counts`` up to ``counts[level]`` from each stream of that level, without blocking;
        ``own_pending`` re-reads this consumer's pending entries instead, without blocking (each
        such re-read counts as a delivery, as XREADGROUP of the history does).

        Due delayed messages of ``queues`` are promoted first, and a blocking fetch wakes when the
        next one falls due (nothing else moves them in-process)."""
        stream_keys = [k for q in queues for k in keys.streams(q)]
        with self._cond:
            next_due = self._promote_all(queues)
            streams = [(key, keys.parse_stream(key)[1], self._stream(key)) for key in stream_keys]
            now = time.monotonic() * 1000
            out: list[Delivery] = []
            if own_pending:
                for key, level, s in streams:
                    mine = sorted((eid for eid, p in s.pending.items() if p.consumer == consumer),
                                  key=_id_key)[:count]
                    for eid in mine:
                        p = s.pending[eid]
                        p.delivered, p.count = now, p.count + 1
                        out.append((key, level, eid, s.entries.get(eid)))
                return out
            if block_ms and counts is None:
                deadline = time.monotonic() + block_ms / 1000.0
                while not any(s.has_ready() for _, _, s in streams):
                    wait = deadline - time.monotonic()
                    if wait <= 0:
                        break
                    if next_due is not None:
                        wait = min(wait, max(next_due - time.time() * 1000, 0.0) / 1000.0)
                    self._cond.wait(wait)
                    next_due = self._promote_all(queues)
                now = time.monotonic() * 1000
            for key, level, s in streams:
                taken = 0
                limit = count if counts is None else counts[level]
                while s.ready and taken < limit:
                    eid = s.ready.popleft()
                    if eid in s.entries:  # skip ids deleted before delivery
                        s.pending[eid] = _Pending(consumer, now)
                        out.append((key, level, eid, s.entries[eid]))
                        taken += 1
            return out

    def finish(self, done: Finish, result_ttl_ms: int) -> None:
        """Everything of ``done`` in the Redis broker's order: results (replacing older ones for
        ids in ``overwrite``), states, dead letters, delayed messages, releases of uniqueness
        keys, then ack + delete; waiters are woken once."""
        with self._cond:
            now = time.monotonic()
            expires = now + result_ttl_ms / 1000.0
            for task_id, record in done.results:
                if task_id in done.overwrite:  # a re-run after a crash replaces, never adds
                    self._results.pop(task_id, None)
                records = self._live_result(task_id) or []
                records.append(record)
                self._results[task_id] = (records, expires)
            for task_id, record in done.states:
                self._states[task_id] = (record, expires)
            for queue, fields in done.dead:
                flat = {_as_bytes(k): _as_bytes(v) for k, v in fields.items()}
                self._dead.setdefault(queue, []).append((self._next_id(), flat))
            for queue, level, due_ms, data in done.delayed:
                self._add_delayed(queue, level, data, due_ms)
            for unique_key, owner in done.releases:
                self._release(unique_key, owner)
            for skey, ids in done.acks.items():
                s = self._stream(skey)
                for eid in ids:
                    s.pending.pop(eid, None)
                    s.entries.pop(eid, None)
            self._cond.notify_all()

    def reclaim(self, consumer: str, queues: list[str], min_idle_ms: int,
                count: int) -> list[Delivery]:
        """Like XAUTOCLAIM: entries pending (for anyone) at least ``min_idle_ms`` move to
        ``consumer``, up to ``count`` per stream, each counted as one more delivery. Pending
        entries whose data was deleted are dropped from the pending list, not returned."""
        out: list[Delivery] = []
        with self._cond:
            now = time.monotonic() * 1000
            for queue in queues:
                for key in keys.streams(queue):
                    s = self._streams.get(key)
                    if s is None or not s.pending:
                        continue
                    level = keys.parse_stream(key)[1]
                    taken = 0
                    for eid in sorted(s.pending, key=_id_key):
                        if taken >= count:
                            break
                        p = s.pending[eid]
                        if now - p.delivered < min_idle_ms:
                            continue
                        data = s.entries.get(eid)
                        if data is None:
                            del s.pending[eid]
                            continue
                        p.consumer, p.delivered, p.count = consumer, now, p.count + 1
                        out.append((key, level, eid, data))
                        taken += 1
        return out

    def delivery_counts(self, deliveries: list[Delivery]) -> list[int]:
        """How many times each entry has been delivered (0 when it is not pending)."""
        with self._cond:
            out = []
            for skey, _level, entry_id, _data in deliveries:
                s = self._streams.get(skey)
                p = s.pending.get(entry_id) if s is not None else None
                out.append(p.count if p is not None else 0)
            return out

    def still_owned(self, consumer: str, deliveries: list[Delivery]) -> list[Delivery]:
        """The deliveries that are still pending for ``consumer`` (not handed back meanwhile)."""
        with self._cond:
            out = []
            for d in deliveries:
                s = self._streams.get(d[0])
                p = s.pending.get(d[2]) if s is not None else None
                if p is not None and p.consumer == consumer:
                    out.append(d)
            return out

    def renew(self, consumer: str, queues: list[str]) -> int:
        """Reset the idle time of everything ``consumer`` holds (no delivery is counted)."""
        renewed = 0
        with self._cond:
            now = time.monotonic() * 1000
            for _key, s, mine in self._pending_of(consumer, queues):
                for eid in mine[:_HANDBACK_MAX]:
                    s.pending[eid].delivered = now
                    renewed += 1
        return renewed

    def hand_back(self, consumer: str, queues: list[str], keep: bytes = b"") -> int:
        """Return ``consumer``'s prefetched messages (all but ``keep``) to the queue: each is added
        again as a new entry and the old one acknowledged and deleted (handback.lua)."""
        keep_id = keep.encode() if isinstance(keep, str) else keep
        moved = 0
        with self._cond:
            for key, s, mine in self._pending_of(consumer, queues):
                for eid in mine[:_HANDBACK_MAX]:
                    if eid == keep_id:
                        continue
                    data = s.entries.pop(eid, None)
                    if data is not None:
                        self._xadd(key, data)
                        moved += 1
                    del s.pending[eid]
            if moved:
                self._cond.notify_all()
        return moved

    def entry(self, skey: str, entry_id: bytes) -> bytes | None:
        """The envelope of one stream entry (None if it is gone)."""
        with self._cond:
            s = self._streams.get(skey)
            return s.entries.get(entry_id) if s is not None else None

    # -- revocations ---------------------------------------------------------------------------
    def revoke(self, task_ids: list[str], terminate: bool, ttl_s: float) -> None:
        with self._cond:
            now = time.time()
            until = now + ttl_s
            self._revoked = {k: v for k, v in self._revoked.items() if v > now}
            for task_id in task_ids:
                self._revoked[task_id] = until
                self._revocations.append((self._next_id(), task_id, until, bool(terminate)))

    def live_revocations(self) -> tuple[dict[str, float], str]:
        """Every revocation still in force, and the cursor to follow new ones from."""
        with self._cond:
            now = time.time()
            live = {k: v for k, v in self._revoked.items() if v >= now}
            cursor = self._revocations[-1][0].decode() if self._revocations else "0-0"
            return live, cursor

    def revocations_since(self, cursor: str) -> tuple[str, list[tuple[str, float, bool]]]:
        """Revocations after ``cursor`` (at most 1000): (new cursor, [(id, until, terminate)])."""
        after = _id_key(cursor)
        out = []
        with self._cond:
            for entry_id, task_id, until, terminate in self._revocations:
                if _id_key(entry_id) <= after:
                    continue
                cursor = entry_id.decode()
                out.append((task_id, until, terminate))
                if len(out) == 1000:
                    break
        return cursor, out

    def peek_state(self, task_id: str) -> bytes | None:
        """The latest non-terminal state record (RETRY, ...) of a task, while it lives."""
        with self._cond:
            item = self._states.get(task_id)
            if item is not None and item[1] <= time.monotonic():
                del self._states[task_id]
                return None
            return item[0] if item else None

    # -- rate limits ---------------------------------------------------------------------------
    def rate_limiter(self, burst_s: float = DEFAULT_BURST_S) -> MemoryRateLimiter:
        """A token-bucket limiter on this broker's buckets (shared by all its limiters), with the
        ``acquire`` of :class:`fastq.ratelimit.RateLimiter`."""
        return MemoryRateLimiter(burst_s, self._buckets, self._buckets_lock)

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
        self._put_expiring(self._workers, consumer, info, ttl_ms)

    def workers(self) -> list[bytes]:
        return self._live_values(self._workers)

    def report_health(self, worker_name: str, info: bytes, ttl_ms: int) -> None:
        self._put_expiring(self._health, worker_name, info, ttl_ms)

    def health_reports(self) -> list[bytes]:
        return self._live_values(self._health)

    def _put_expiring(self, table: dict, name: str, info: bytes, ttl_ms: int) -> None:
        """Like SET PX: ``info`` under ``name`` for ``ttl_ms``."""
        with self._cond:
            table[name] = (info, time.monotonic() + ttl_ms / 1000.0)

    def _live_values(self, table: dict) -> list[bytes]:
        now = time.monotonic()
        with self._cond:
            return [info for info, expires in table.values() if expires > now]

    def queues(self) -> list[str]:
        with self._cond:
            return sorted(self._known_queues)

    def stats(self, queue: str) -> list[StreamStats]:
        """Per level: depth (ready + pending entries), pending, age of the oldest entry. Delayed
        messages are not in a stream yet, so not counted (as with Redis)."""
        now = _now_ms()
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

    def trim(self, queue: str) -> int:
        """Nothing to trim: acknowledged entries are deleted at once and nothing is lost here."""
        return 0

    def close(self) -> None:
        """Nothing to release; the data stays until :meth:`clear` (``App.close()`` reconnects to
        the same named broker)."""
