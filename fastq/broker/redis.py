"""The Redis Streams broker (docs/architecture.md §Keys, §Delivery).

One stream per (queue, priority level), one consumer group ``fastq`` per stream. Consumers read with
XREADGROUP, and acknowledge with XACK + XDEL in the same pipeline that writes the results, so a
stream only ever holds ready and in-flight messages.
"""
from __future__ import annotations

import time
from collections.abc import Iterable

import redis

from fastq import keys
from fastq.broker.base import Delivery, Finish, StreamStats

_STREAM_INFO: dict[str, tuple[str, int]] = {}


def _stream_info(key: str | bytes) -> tuple[str, int]:
    """Cached (stream key as str, level) for a key from a Redis reply."""
    info = _STREAM_INFO.get(key)  # type: ignore[arg-type]
    if info is None:
        text = key.decode() if isinstance(key, bytes) else key
        info = _STREAM_INFO[key] = (text, keys.parse_stream(text)[1])  # type: ignore[index]
    return info


def _parse_id(entry_id: bytes | str) -> tuple[int, int]:
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


def _client(url: str) -> redis.Redis:
    """RESP2 (raw replies have one known shape) and no read timeout: blocking reads (XREADGROUP
    BLOCK, BLMOVE) set their own; keepalive detects a dead peer."""
    return redis.Redis.from_url(url, protocol=2, socket_timeout=None, socket_connect_timeout=5,
                                socket_keepalive=True, health_check_interval=0)


class RedisBroker:
    """A broker on one Redis server. Safe to use after ``fork()``: redis-py reconnects per process."""

    def __init__(self, url: str, result_url: str | None = None):
        self.url = url
        self.client = _client(url)
        # Results live on the broker's Redis unless a separate result backend is configured.
        self.results = _client(result_url) if result_url and result_url != url else self.client
        # Raw XREADGROUP replies: skip redis-py's per-entry dict building on the hot path.
        self.client.response_callbacks.pop("XREADGROUP", None)
        self._known_queues: set[str] = set()
        self._prepared: set[str] = set()

    # -- producing -------------------------------------------------------------------------
    def _remember(self, queue: str, pipe=None) -> None:
        """Record the queue name once per process (for status, purge and maintenance)."""
        if queue not in self._known_queues:
            (pipe or self.client).sadd(keys.QUEUES, queue)
            self._known_queues.add(queue)

    def send(self, queue: str, level: int, data: bytes) -> None:
        if queue not in self._known_queues:
            self._remember(queue)
        self.client.execute_command("XADD", keys.stream(queue, level), "*", "m", data)

    def send_many(self, items: Iterable[tuple[str, int, bytes]]) -> None:
        pipe = self.client.pipeline(transaction=False)
        for queue, level, data in items:
            if queue not in self._known_queues:
                self._remember(queue, pipe)
            pipe.execute_command("XADD", keys.stream(queue, level), "*", "m", data)
        pipe.execute()

    # -- consuming -------------------------------------------------------------------------
    def prepare(self, queues: Iterable[str]) -> None:
        pipe = self.client.pipeline(transaction=False)
        for queue in queues:
            self._remember(queue, pipe)
            for key in keys.streams(queue):
                # id 0: a group made after producers started must still see their messages.
                pipe.execute_command("XGROUP", "CREATE", key, keys.GROUP, "0", "MKSTREAM")
            self._prepared.add(queue)
        for reply in pipe.execute(raise_on_error=False):
            if isinstance(reply, Exception) and "BUSYGROUP" not in str(reply):
                raise reply

    def fetch(self, consumer: str, queues: list[str], count: int, block_ms: int,
              own_pending: bool = False) -> list[Delivery]:
        """Read up to ``count`` entries per stream; ``own_pending`` re-reads this consumer's PEL."""
        stream_keys = [k for q in queues for k in keys.streams(q)]
        ids = ["0" if own_pending else ">"] * len(stream_keys)
        args = ["XREADGROUP", "GROUP", keys.GROUP, consumer, "COUNT", count]
        if block_ms and not own_pending:
            args += ["BLOCK", block_ms]
        try:
            reply = self.client.execute_command(*args, "STREAMS", *stream_keys, *ids)
        except redis.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            self.prepare(queues)  # the stream was deleted under us (e.g. FLUSHDB): recreate
            return []
        out: list[Delivery] = []
        if not reply:
            return out
        for key, entries in reply:
            skey, level = _stream_info(key)
            for entry_id, fields in entries:
                out.append((skey, level, entry_id, fields[1] if fields else None))
        return out

    def finish(self, done: Finish, result_ttl_ms: int) -> None:
        pipe = self.results.pipeline(transaction=False)
        cmd = pipe.execute_command
        for task_id, record in done.results:
            key = keys.result(task_id)
            cmd("RPUSH", key, record)
            cmd("PEXPIRE", key, result_ttl_ms)
        if self.results is not self.client:  # results must be stored before anything is acked
            if done.results:
                pipe.execute()
            pipe = self.client.pipeline(transaction=False)
            cmd = pipe.execute_command
        for queue, fields in done.dead:
            flat = [x for kv in fields.items() for x in kv]
            cmd("XADD", keys.dlq(queue), "*", *flat)
        for skey, ids in done.acks.items():
            cmd("XACK", skey, keys.GROUP, *ids)
            cmd("XDEL", skey, *ids)
        pipe.execute()

    # -- results ---------------------------------------------------------------------------
    def wait_result(self, task_id: str, timeout: float | None) -> bytes | None:
        """Block until the record exists. BLMOVE of a list onto itself returns the element and
        leaves it in place, so any number of waiters wake on one push and no polling is needed."""
        key = keys.result(task_id)
        if timeout is not None and timeout <= 0:
            return self.results.lindex(key, 0)
        return self.results.execute_command("BLMOVE", key, key, "RIGHT", "LEFT",
                                           0 if timeout is None else timeout)

    def peek_result(self, task_id: str) -> bytes | None:
        return self.results.lindex(keys.result(task_id), 0)

    def forget_result(self, task_id: str) -> None:
        self.results.delete(keys.result(task_id))

    # -- monitoring and housekeeping -------------------------------------------------------
    def heartbeat(self, consumer: str, info: bytes, ttl_ms: int) -> None:
        self.client.set(keys.worker(consumer), info, px=ttl_ms)

    def workers(self) -> list[bytes]:
        names = list(self.client.scan_iter(match=keys.WORKER_PATTERN, count=1000))
        return [v for v in self.client.mget(names) if v] if names else []

    def queues(self) -> list[str]:
        return sorted(q.decode() for q in self.client.smembers(keys.QUEUES))

    def stats(self, queue: str) -> list[StreamStats]:
        pipe = self.client.pipeline(transaction=False)
        for key in keys.streams(queue):
            pipe.xlen(key)
            pipe.execute_command("XPENDING", key, keys.GROUP)
            pipe.execute_command("XRANGE", key, "-", "+", "COUNT", 1)
        replies = pipe.execute(raise_on_error=False)
        now = int(time.time() * 1000)
        out = []
        for level in range(keys.LEVELS):
            depth, pending, first = replies[3 * level: 3 * level + 3]
            n_pending = pending[0] if isinstance(pending, list) else 0
            age = now - _parse_id(first[0][0])[0] if isinstance(first, list) and first else 0
            out.append(StreamStats(queue, level, depth if isinstance(depth, int) else 0,
                                   n_pending, max(age, 0)))
        return out

    def dead_letters(self, queue: str, count: int = 100) -> list[tuple[bytes, dict]]:
        return self.client.xrange(keys.dlq(queue), count=count)

    def purge(self, queue: str) -> int:
        """Drop the messages waiting in ``queue`` (all levels). In-flight ones finish normally."""
        pipe = self.client.pipeline(transaction=False)
        for key in keys.streams(queue):
            pipe.execute_command("XTRIM", key, "MAXLEN", 0)
        return sum(n for n in pipe.execute(raise_on_error=False) if isinstance(n, int))

    def trim(self, queue: str) -> int:
        """Safety net against stream growth: XTRIM MINID below everything not yet acknowledged.

        Acked entries are already XDELed; this removes leftovers (e.g. from an ack whose XDEL was
        lost) without ever touching an entry that is pending or not yet delivered.
        """
        removed = 0
        for key in keys.streams(queue):
            try:
                groups = self.client.xinfo_groups(key)
                pending = self.client.xpending(key, keys.GROUP)
            except redis.ResponseError:  # no stream or no group yet
                continue
            group = next((g for g in groups if g["name"] == keys.GROUP.encode()), None)
            if group is None:
                continue
            ms, seq = _parse_id(group["last-delivered-id"])
            floor = (ms, seq + 1)  # everything after last-delivered is undelivered
            if pending["pending"]:
                floor = min(floor, _parse_id(pending["min"]))
            removed += self.client.execute_command("XTRIM", key, "MINID", f"{floor[0]}-{floor[1]}")
        return removed

    def close(self) -> None:
        self.client.close()
        if self.results is not self.client:
            self.results.close()
