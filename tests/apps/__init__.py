"""Apps the integration tests run real workers on (broker from FASTQ_BROKER_URL)."""
from __future__ import annotations

import os

import redis

_effects: redis.Redis | None = None


def effects() -> redis.Redis:
    """A plain client (one per process) for recording side effects that tests then inspect."""
    global _effects
    if _effects is None or _effects.connection_pool.pid != os.getpid():
        _effects = redis.Redis.from_url(os.environ["FASTQ_BROKER_URL"])
    return _effects
