"""The raw Redis ceiling a throughput gate compares fastq with (fastq/throughput.py).

Plain redis-py (hiredis when installed) doing the Redis work of a hot path and nothing else, on the
same server and in the same run as the fastq measurement: a gate compares fastq's *share* of this
ceiling with a baseline's, so a machine that is slower (or busier) today moves both numbers and
the share stays put. Each method returns the best wall time in seconds of ``rounds`` runs of ``n``
operations, on a stream of its own (``keys.CEILING``) that is deleted afterwards.
"""
from __future__ import annotations

import time
from collections.abc import Callable

import redis

from fastq import keys
from fastq.broker.redis import unavailable

VALUE = b"x" * 60  # about the size of a small fastq envelope
READ_COUNT = 100  # entries per XREADGROUP, as a worker's prefetch
CONSUMER = "ceiling"


class Ceiling:
    """What Redis alone does on this machine for each gate's hot path (see the module docstring)."""

    def __init__(self, url: str):
        if not url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(f"a throughput ceiling needs a real Redis server, not {url.split(':')[0]}://")
        self.client = redis.Redis.from_url(url, protocol=2)

    def _best(self, run: Callable[[int], None], n: int, rounds: int) -> float:
        best = float("inf")
        try:
            for _ in range(rounds):
                self.client.delete(keys.CEILING, keys.CEILING_REPLY)
                self.client.xgroup_create(keys.CEILING, keys.GROUP, id="0", mkstream=True)
                start = time.perf_counter()
                run(n)
                best = min(best, time.perf_counter() - start)
            self.client.delete(keys.CEILING, keys.CEILING_REPLY)
        except redis.RedisError as exc:
            raise unavailable(exc) from exc
        return best

    def send_one(self, n: int, rounds: int = 1) -> float:
        """``n`` XADDs, one round trip each (``task.delay()``)."""
        return self._best(self._send_one, n, rounds)

    def send_batch(self, n: int, rounds: int = 1) -> float:
        """``n`` XADDs in one pipeline (``app.batch()``)."""
        return self._best(self._send_batch, n, rounds)

    def drain(self, n: int, rounds: int = 1) -> float:
        """``n`` XADDs in one pipeline, then XREADGROUP ``READ_COUNT`` at a time, each read's
        entries acknowledged in one XACK (a batch sent to a worker, worked off)."""
        return self._best(self._drain, n, rounds)

    def round_trip(self, n: int, rounds: int = 1) -> float:
        """``n`` request/replies one after the other: XADD, XREADGROUP, XACK + RPUSH, BLPOP
        (``task.delay().get()`` with the consumer in the same process)."""
        return self._best(self._round_trip, n, rounds)

    def close(self) -> None:
        self.client.close()

    def _send_one(self, n: int) -> None:
        command = self.client.execute_command
        for _ in range(n):
            command("XADD", keys.CEILING, "*", "m", VALUE)

    def _send_batch(self, n: int) -> None:
        pipe = self.client.pipeline(transaction=False)
        for _ in range(n):
            pipe.execute_command("XADD", keys.CEILING, "*", "m", VALUE)
        pipe.execute()

    def _read(self, count: int) -> list[bytes]:
        reply = self.client.execute_command("XREADGROUP", "GROUP", keys.GROUP, CONSUMER,
                                            "COUNT", count, "STREAMS", keys.CEILING, ">")
        return [entry[0] for entry in reply[0][1]] if reply else []

    def _drain(self, n: int) -> None:
        self._send_batch(n)
        done = 0
        while done < n:
            ids = self._read(READ_COUNT)
            if not ids:
                raise RuntimeError(f"ceiling drain: {n - done} entries missing from {keys.CEILING}")
            self.client.execute_command("XACK", keys.CEILING, keys.GROUP, *ids)
            done += len(ids)

    def _round_trip(self, n: int) -> None:
        command = self.client.execute_command
        for _ in range(n):
            command("XADD", keys.CEILING, "*", "m", VALUE)
            ids = self._read(1)
            pipe = self.client.pipeline(transaction=False)
            pipe.execute_command("XACK", keys.CEILING, keys.GROUP, *ids)
            pipe.execute_command("RPUSH", keys.CEILING_REPLY, VALUE)
            pipe.execute()
            command("BLPOP", keys.CEILING_REPLY, 1)
