"""Celery's event and remote-control messages as kombu's Redis transport writes them: a JSON
envelope whose body (JSON, base64) is the event or command. Written by hand so the engine needs
neither kombu nor Celery; checked against both in tests/test_events.py."""
from __future__ import annotations

import base64
import json
import os
import time
import uuid
from typing import Any

EVENT_EXCHANGE = "celeryev"
PIDBOX_EXCHANGE = "celery.pidbox"


def envelope(body: Any, exchange: str, routing_key: str, headers: dict[str, Any],
             delivery_mode: int = 1) -> bytes:
    return json.dumps({
        "body": base64.b64encode(json.dumps(body, default=repr).encode()).decode(),
        "content-encoding": "utf-8", "content-type": "application/json", "headers": headers,
        "properties": {"delivery_mode": delivery_mode,
                       "delivery_info": {"exchange": exchange, "routing_key": routing_key},
                       "priority": 0, "body_encoding": "base64",
                       "delivery_tag": str(uuid.uuid4())}}).encode()


def opened(data: bytes) -> tuple[Any, dict[str, Any]]:
    """(body, headers) of an envelope; ValueError when it is not one."""
    try:
        message = json.loads(data)
        raw = message["body"]
        if message.get("properties", {}).get("body_encoding") == "base64":
            raw = base64.b64decode(raw)
        return json.loads(raw), message.get("headers") or {}
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"not a kombu message: {exc}") from exc


def utcoffset() -> float:
    """Hours west of UTC, as Celery's events carry it."""
    return (time.altzone if time.daylight and time.localtime().tm_isdst else time.timezone) / 3600


class Clock:
    """A Lamport clock of this process (Celery's events carry one)."""

    def __init__(self) -> None:
        self.value = 0

    def tick(self) -> int:
        self.value += 1
        return self.value


def event(kind: str, hostname: str, clock: Clock, timestamp: float | None = None,
          **fields: Any) -> dict[str, Any]:
    return {"hostname": hostname, "utcoffset": utcoffset(), "pid": os.getpid(),
            "clock": clock.tick(), **fields, "timestamp": timestamp or time.time(), "type": kind}
