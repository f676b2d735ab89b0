"""The ``memory://`` broker, for users' unit tests: the Redis broker itself, over fakeredis.

:class:`MemoryBroker` is :class:`fastq.broker.redis.RedisBroker` with its clients pointed at an
in-process ``fakeredis`` server (with Lua, so every verb in ``fastq/broker/lua/`` runs as it does in
Redis): one implementation of every broker method and every atomic verb. Nothing is shared between
processes and nothing persists. ``MemoryBroker.named(url)`` gives every ``App(broker=url)`` of the
process the same instance; ``clear()`` empties one broker and ``MemoryBroker.reset()`` every named
one.

What differs from a real Redis, and why (docs/architecture.md, "memory://"):

- no supervisor runs beside a unit test to move due delayed messages (countdown, eta, retries),
  so :meth:`fetch` promotes the due ones of the queues it reads first, and a blocking fetch wakes
  every ``DELAYED_SLICE_MS`` to promote again (in Redis the supervisor's mover does this);
- ``finish_and_fetch`` is a finish and then a fetch (which promotes first), not one pipeline;
- a fetch sends the workflow nodes it is handed (``release``) in a call of its own before
  reading, where Redis pipelines the two;
- fakeredis's BLMOVE does not block when the list does not exist yet, so a result wait uses
  BRPOPLPUSH, the same move (right to left, a list onto itself) under its older name.
"""
from __future__ import annotations

import time
from typing import ClassVar

import fakeredis
import redis

from fastq.broker.base import Delivery, Finish, GraphStep, Release
from fastq.broker.redis import RedisBroker

DELAYED_SLICE_MS = 20


class MemoryBroker(RedisBroker):
    _named: ClassVar[dict[str, MemoryBroker]] = {}

    def __init__(self, url: str = "memory://"):
        self._server = fakeredis.FakeServer()
        super().__init__(url)

    def _connect(self, url: str, read_timeout: float | None = 30.0) -> redis.Redis:
        return fakeredis.FakeRedis(server=self._server, protocol=2)

    def with_timeout(self, seconds: float) -> MemoryBroker:
        """This broker: an in-process server never hangs, so there is nothing to time out."""
        return self

    @classmethod
    def named(cls, url: str) -> MemoryBroker:
        """The one broker of this process for ``url`` (made on first use)."""
        broker = cls._named.get(url)
        if broker is None:
            broker = cls._named[url] = cls(url)
        return broker

    @classmethod
    def reset(cls) -> None:
        """Empty every named memory broker."""
        for broker in cls._named.values():
            broker.clear()

    def clear(self) -> None:
        """Drop everything this broker holds (messages, results, buckets ...)."""
        self.client.flushall()
        self._known_queues.clear()

    def _wait_args(self, key: str, timeout: float) -> tuple:
        return ("BRPOPLPUSH", key, key, timeout)

    def fetch(self, consumer: str, queues: list[str], count: int, block_ms: int,
              own_pending: bool = False, counts: list[int] | None = None,
              release: Release | None = None) -> list[Delivery]:
        """As in Redis, after promoting the due delayed messages of ``queues``; a blocking read
        wakes every ``DELAYED_SLICE_MS`` to promote what fell due meanwhile. A ``release`` is
        sent first, on its own (round trips cost nothing here)."""
        if release is not None:
            self.graph_release(release)
        deadline = time.monotonic() + block_ms / 1000.0
        while True:
            self._promote_all(queues)
            left_ms = int((deadline - time.monotonic()) * 1000)
            block = min(left_ms, DELAYED_SLICE_MS) if block_ms and left_ms > 0 else 0
            got = super().fetch(consumer, queues, count, block, own_pending, counts)
            if got or own_pending or counts is not None or block == 0:
                return got

    def finish_and_fetch(self, done: Finish, result_ttl_ms: int, consumer: str,
                         queues: list[str], count: int, counts: list[int] | None = None,
                         release: Release | None = None
                         ) -> tuple[list[GraphStep], list[Delivery]]:
        """The two calls one after the other (the fetch promotes due messages first)."""
        steps = self.finish(done, result_ttl_ms)
        return steps, self.fetch(consumer, queues, count, 0, counts=counts, release=release)

    def _promote_all(self, queues: list[str]) -> None:
        now_ms = int(time.time() * 1000)
        for queue in queues:
            while self.promote(queue, now_ms)[0] >= 1000:
                pass
