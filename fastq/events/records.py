"""Task runs as fastq's event stream stores them, and as Celery's events.

A round's runs go on fastq's stream compact: one msgpack list per run (id, task, queue,
outcome, started, ended (epoch s; started 0: not known), root id, parent id, attempt, eta ms,
expires ms, the message's encoded body (decoded only by a reader), its codec, compressed, and
the outcome's detail). :func:`expand` turns them into Celery's
events (task-received, task-started, then the outcome), for ``fastq events``, the dashboard, and
the Celery channel while someone listens on it.
"""
from __future__ import annotations

import traceback
from datetime import UTC, datetime
from typing import Any

import msgpack
import orjson

from fastq._core import unpack_body

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
           accept_pickle: bool = False) -> list[dict[str, Any]]:
    """Celery's events for ``runs``, their clocks counting on from ``clock`` (three a run)."""
    base = {"hostname": hostname, "utcoffset": utcoffset, "pid": pid}
    out: list[dict[str, Any]] = []
    for (uuid, name, queue, outcome, started, ended, root_id, parent_id, attempt, eta_ms,
         expires_ms, body, codec, compressed, info) in runs:
        t_start = started or ended
        first = clock
        try:
            args, kwargs = unpack_body(body, codec, compressed, accept_pickle)
            args, kwargs = cut(repr(args)), cut(repr(kwargs))
        except Exception:  # noqa: BLE001 - shown as unknown
            args, kwargs = "?", "?"
        clock = first + 1
        out.append({**base, "clock": clock, "uuid": uuid, "name": name, "args": args,
                    "kwargs": kwargs, "root_id": root_id or uuid, "parent_id": parent_id,
                    "retries": attempt, "eta": _iso(eta_ms), "expires": _iso(expires_ms),
                    "routing_key": queue, "queue": queue, "timestamp": t_start,
                    "type": "task-received"})
        clock = first + 2
        if outcome == "task-revoked":
            out.append({**base, "clock": clock, "uuid": uuid, "terminated": False,
                        "signum": None, "expired": bool(info), "timestamp": ended,
                        "type": outcome})
            clock = first + 3
            continue
        out.append({**base, "clock": clock, "uuid": uuid, "timestamp": t_start,
                    "type": "task-started"})
        clock = first + 3
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
    if fields.get(b"r"):
        events += expand(msgpack.unpackb(fields[b"r"]), fields[b"h"].decode(),
                         int(fields[b"p"]), float(fields[b"o"]), int(fields[b"c"]),
                         accept_pickle)
    return events
