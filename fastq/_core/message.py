"""The message envelope as Python sees it.

The wire format (see ``docs/architecture.md`` §Envelope) is produced and parsed by ``fastq._core``;
this module only holds the decoded form. The body (args, kwargs) stays encoded until the worker runs
the task, so routing, DLQ and selection never pay for deserialising arguments.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

CODEC_MSGPACK = 0
CODEC_JSON = 1
CODEC_PICKLE = 2
CODEC_NAMES = {"msgpack": CODEC_MSGPACK, "json": CODEC_JSON, "pickle": CODEC_PICKLE}
CODEC_BY_ID = {v: k for k, v in CODEC_NAMES.items()}


@dataclass(slots=True)
class Message:
    """One task message. Times are epoch milliseconds; 0 means "not set"."""

    id: str
    task: str
    body: bytes = b""
    codec: int = CODEC_MSGPACK
    compressed: bool = False
    priority: int = 2
    attempt: int = 0
    eta_ms: int = 0
    expires_ms: int = 0
    soft_limit_ms: int = 0
    hard_limit_ms: int = 0
    parent_id: str | None = None
    root_id: str | None = None
    group_id: str | None = None
    dag_id: str | None = None
    idem_key: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    # Not on the wire: the queue it is sent to (set by the producer) or was read from (set by the
    # worker), for the hooks that report it (signals' routing_key, metrics' queue_name).
    queue: str = ""
    children: list[str] | None = None  # not on the wire: ids of the tasks its run sent
