"""Brokers: Redis Streams for real work, ``memory://`` for users' unit tests."""
from __future__ import annotations

from fastq.broker.base import Broker, ConsumerStats, Delivery, Finish, StreamStats


def connect(url: str, result_url: str | None = None) -> Broker:
    """A broker for ``url`` (redis://, rediss://, unix://, memory://)."""
    if url.startswith("memory://"):
        try:
            from fastq.broker.memory import MemoryBroker
        except ImportError as exc:  # fakeredis is a test dependency
            raise ImportError(f"memory:// runs the Redis broker over fakeredis, which is not "
                              f"installed ({exc}): pip install 'fastq[testing]'") from exc

        return MemoryBroker.named(url)
    if url.split("://", 1)[0] in ("redis", "rediss", "unix"):
        from fastq.broker.redis import RedisBroker

        return RedisBroker(url, result_url=result_url)
    raise ValueError(f"unsupported broker url {url!r}: use redis://host:port/db or memory://")


__all__ = ["Broker", "ConsumerStats", "Delivery", "Finish", "StreamStats", "connect"]
