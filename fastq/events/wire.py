"""Celery's event and remote-control messages as kombu's Redis transport writes them: a JSON
envelope whose body (JSON, base64) is the event or command. Written by hand so the engine needs
neither kombu nor Celery; checked against both in tests/test_events.py."""
from __future__ import annotations

import base64
import json
import time
import uuid
from typing import Any

import orjson

EVENT_EXCHANGE = "celeryev"
PIDBOX_EXCHANGE = "celery.pidbox"


def envelope(body: Any, exchange: str, routing_key: str, headers: dict[str, Any],
             delivery_mode: int = 1) -> bytes:
    return encoded_envelope(orjson.dumps(body, default=repr), exchange, routing_key, headers,
                            delivery_mode)


def encoded_envelope(body: bytes, exchange: str, routing_key: str, headers: dict[str, Any],
                     delivery_mode: int = 1) -> bytes:
    """An envelope around a body already encoded as JSON."""
    return orjson.dumps({
        "body": base64.b64encode(body).decode(),
        "content-encoding": "utf-8", "content-type": "application/json", "headers": headers,
        "properties": {"delivery_mode": delivery_mode,
                       "delivery_info": {"exchange": exchange, "routing_key": routing_key},
                       "priority": 0, "body_encoding": "base64",
                       "delivery_tag": str(uuid.uuid4())}})


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
