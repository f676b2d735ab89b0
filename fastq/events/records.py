"""Task runs as fastq's event stream stores them, and as Celery's events.

A round's runs go on fastq's stream compact: one msgpack array per run of (the message's
envelope as it was read from its stream, its queue, the outcome's event type, started, ended,
the outcome's detail). Times are the child's ``time.monotonic()`` (started 0: not known); the
entry's ``t`` turns them into epoch seconds. The envelope is the bytes the child decoded, so a
run costs no re-encoding: only a reader decodes it (id, name, root and parent, attempt, eta,
expiry and the arguments). :func:`expand` turns runs into Celery's events (task-received,
task-started, then the outcome), for ``fastq events``, the dashboard, and the Celery channel
while someone listens on it.
"""
from __future__ import annotations

import traceback
from datetime import UTC, datetime
from typing import Any

import msgpack
import orjson

from fastq._core import decode_message, unpack_body

REPR_MAX = 1024  # as Celery's argsrepr / resultrepr


def cut(text: str) -> str:
    return text if len(text) <= REPR_MAX else text[:REPR_MAX - 3] + "..."


def detail(outcome: str | None, exc: BaseException | None, result: Any) -> Any:
    """What a run's outcome event says besides its type: the result's repr, the exception's
    repr and traceback, or (revoked) whether it expired."""
    if outcome == "task-succeeded":
        return cut(repr(result))
    if outcome == "task-revoked":
        return getattr(exc, "reason", "") == "expired"
    if outcome in ("task-failed", "task-retried"):
        return [cut(repr(exc)),
                "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))]
    return None


def _iso(ms: int) -> str | None:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat() if ms else None


def expand(runs: list, hostname: str, pid: int, utcoffset: float, clock: int,
           to_epoch: float, accept_pickle: bool = False) -> list[dict[str, Any]]:
    """Celery's events for ``runs``, their clocks counting on from ``clock`` (three a run),
    their times ``time.monotonic()`` + ``to_epoch``."""
    base = {"hostname": hostname, "utcoffset": utcoffset, "pid": pid}
    out: list[dict[str, Any]] = []
    for envelope, queue, outcome, started, ended, info in runs:
        first = clock
        clock = first + 3
        try:
            msg = decode_message(envelope)
        except Exception:  # noqa: BLE001 - a run nobody can read is not an event
            continue
        ended += to_epoch
        t_start = started + to_epoch if started else ended
        uuid = msg.id
        try:
            args, kwargs = unpack_body(msg.body, msg.codec, msg.compressed, accept_pickle)
            args, kwargs = cut(repr(args)), cut(repr(kwargs))
        except Exception:  # noqa: BLE001 - shown as unknown
            args, kwargs = "?", "?"
        out.append({**base, "clock": first + 1, "uuid": uuid, "name": msg.task, "args": args,
                    "kwargs": kwargs, "root_id": msg.root_id or uuid,
                    "parent_id": msg.parent_id, "retries": msg.attempt,
                    "eta": _iso(msg.eta_ms), "expires": _iso(msg.expires_ms),
                    "routing_key": queue, "queue": queue, "timestamp": t_start,
                    "type": "task-received"})
        if outcome == "task-revoked":
            out.append({**base, "clock": first + 2, "uuid": uuid, "terminated": False,
                        "signum": None, "expired": bool(info), "timestamp": ended,
                        "type": outcome})
            continue
        out.append({**base, "clock": first + 2, "uuid": uuid, "timestamp": t_start,
                    "type": "task-started"})
        if outcome is None:
            continue
        last = {**base, "clock": clock, "uuid": uuid, "timestamp": ended, "type": outcome}
        if outcome == "task-succeeded":
            last["result"], last["runtime"] = info, ended - t_start
        elif outcome == "task-rejected":
            last["requeue"] = False
        else:
            last["exception"], last["traceback"] = info
        out.append(last)
    return out


def from_entry(fields: dict[bytes, bytes], accept_pickle: bool = False) -> list[dict[str, Any]]:
    """The events of one entry of fastq's stream: its worker events, then its runs expanded."""
    events = orjson.loads(fields[b"e"]) if fields.get(b"e") else []
    if fields.get(b"r") and b"t" in fields:  # (entries without "t" hold an older layout)
        events += expand(msgpack.unpackb(fields[b"r"]), fields[b"h"].decode(),
                         int(fields[b"p"]), float(fields[b"o"]), int(fields[b"c"]),
                         float(fields[b"t"]), accept_pickle)
    return events
