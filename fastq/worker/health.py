"""Worker health: what a supervisor reports about itself and its children, and how it is judged.

Every ``heartbeat_s`` the supervisor writes one record (msgpack, TTL three heartbeats) at
``fastq:h:{worker}``: its pid and host, per child slot whether it is busy (task id, for how long)
or idle (how long since its fetch loop last went round), and the watchdog's restarts. A child
heartbeat cannot say this: a child that stopped consuming also stops writing it, and so does a
healthy child busy with a long task. ``fastq health`` reads the records (see :func:`problems`).
A worker that stopped warm writes a last record with ``stopped`` set: ``fastq health`` no longer
counts it, and the alert checks (fastq/alerts/checks.py) take its expiry for a stop, not a loss.
"""
from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import msgpack

from fastq.worker.slots import Slots

if TYPE_CHECKING:
    from fastq.broker import Broker

QUIET_S = 5.0  # an idle fetch loop silent for block_ms + this long is reported


def record(name: str, slots: Slots, consumer: Callable[[int], str], block_s: float,
           stall_s: float, restarts: int, last_restart: float | None,
           started: Mapping[int, float] | None = None, stopping: bool = False) -> dict[str, Any]:
    """The health record of this supervisor (``last_restart`` is epoch seconds; ``started`` maps
    a slot to when its current child was started, ``time.monotonic()``)."""
    mono, wall = time.monotonic(), time.time()
    children = []
    for slot in range(slots.count):
        st = slots.read(slot)
        born = started.get(slot) if started else None
        children.append({
            "slot": slot, "consumer": consumer(slot), "busy": st.busy,
            "task_id": st.task_id if st.busy else None,
            "busy_s": round(mono - st.started, 3) if st.busy else 0.0,
            "loop_age_s": round(mono - st.last_loop, 3) if st.last_loop else None,
            "up_s": round(mono - born, 3) if born is not None else None,
            # a restarted child's slot still shows its predecessor's last round until its own
            "looping": bool(st.last_loop) and (born is None or st.last_loop >= born),
        })
    return {"worker": name, "pid": os.getpid(), "host": socket.gethostname(), "at": wall,
            "quiet_after_s": block_s + min(QUIET_S, stall_s), "children": children,
            "watchdog_restarts": restarts, "last_watchdog_at": last_restart, "stopping": stopping}


def problems(rec: dict[str, Any]) -> list[str]:
    """What is wrong with a worker now: an idle child whose fetch loop has been quiet too long
    (it has stopped consuming; the watchdog restarts it after ``stall_s``), or a child that has
    not started its loop that long after it was started. A child being started or stopped (a
    warm shutdown) is not a problem. Empty when healthy."""
    if rec.get("stopping"):
        return []
    out = []
    limit = rec["quiet_after_s"]
    for child in rec["children"]:
        age = child["loop_age_s"]
        if child["busy"]:
            continue
        if not child.get("looping", age is not None):
            up = child.get("up_s")
            if up is not None and up > limit:
                out.append(f"{child['consumer']}: fetch loop not started {up:.1f} s after the "
                           f"child started (limit {limit:.1f} s)")
        elif age > limit:
            out.append(f"{child['consumer']}: fetch loop quiet for {age:.1f} s (limit {limit:.1f} s)")
    return out


def pool_totals(broker: Broker, consumers: set[str]) -> dict[str, int]:
    """Tasks processed and failed by the children named, from their heartbeats."""
    beats = [w for w in map(msgpack.unpackb, broker.workers()) if w.get("consumer") in consumers]
    return {"processed": sum(b.get("processed", 0) for b in beats),
            "failed": sum(b.get("failed", 0) for b in beats)}


def live_consumers(broker: Broker) -> set[str]:
    """The consumer names of live worker children: those with a heartbeat, and every child slot
    of a live supervisor (a child busy with a long task writes no heartbeat of its own)."""
    names = {msgpack.unpackb(raw)["consumer"] for raw in broker.workers()}
    for raw in broker.health_reports():
        names.update(child["consumer"] for child in msgpack.unpackb(raw)["children"])
    return names


def live_workers(broker: Broker) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """What ``fastq status`` and the web dashboard show of the workers: (the supervisors' health
    records by worker name, each child with its own heartbeat as ``beat`` (None while it writes
    none, e.g. busy with a long task), the heartbeats of consumers without a supervisor)."""
    beats = {w["consumer"]: w for w in map(msgpack.unpackb, broker.workers())}
    records = sorted(map(msgpack.unpackb, broker.health_reports()), key=lambda rec: rec["worker"])
    for rec in records:
        for child in rec["children"]:
            child["beat"] = beats.pop(child["consumer"], None)
    return records, sorted(beats.values(), key=lambda w: w["consumer"])
