"""Move messages waiting in Celery's queues on Redis (kombu's lists) into fastq's streams.

``fastq -A proj migrate-celery --from redis://old -Q celery,video``: every message still queued
for Celery (protocol 2 JSON, as Celery 4 and 5 send; protocol 1 too) is sent to fastq with its task
id, arguments, queue, priority, ``eta``/``countdown``, ``expires``, time limits and its
``link``/``link_error`` callbacks and the rest of its chain, so the results its producers wait for
arrive under the same ids. ``--include-unacked`` also moves the messages kombu holds in its
``unacked`` area (ETA'd tasks a Celery worker had reserved): only safe once no Celery worker runs.

Nothing is lost: each message is moved to an in-flight list (LMOVE) before it is sent and removed
from it only once sent, and a message that cannot be converted (pickle, a chord member, a body
that does not decode) is kept in ``fastq:celery-migrate:unmigrated:<queue>`` with the reason. A
run that stopped half-way is resumed by the next, which first sends what was in flight (so one
message may be sent twice if the stop fell between its send and its removal).
"""
from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import redis

from fastq import keys
from fastq.workflows.canvas import Signature, chain, maybe_signature

if TYPE_CHECKING:
    from fastq.app import App


class Unconvertible(ValueError):
    """A Celery message fastq cannot run as it is (the reason says why)."""


@dataclass
class Report:
    moved: dict[str, int] = field(default_factory=dict)  # queue -> messages sent to fastq
    kept: dict[str, list[str]] = field(default_factory=dict)  # queue -> why each was kept

    @property
    def total(self) -> int:
        return sum(self.moved.values())


def migrate(app: App, source_url: str, queues: list[str], to_queue: str | None = None,
            include_unacked: bool = False, dry_run: bool = False) -> Report:
    """Move every message of ``queues`` (and, asked, kombu's unacked ones) into fastq."""
    if app.runs_eagerly():
        raise RuntimeError("task_always_eager is on: the tasks would run here instead of being "
                           "moved; turn it off to migrate")
    source = redis.Redis.from_url(source_url)
    report = Report()
    try:
        _resume(app, source, to_queue, report, dry_run)
        for queue in queues:
            for key in keys.kombu_queue_lists(queue):
                _drain_list(app, source, key, queue, to_queue, report, dry_run)
        if include_unacked:
            _drain_unacked(app, source, set(queues), to_queue, report, dry_run)
    finally:
        source.close()
    return report


def _drain_list(app: App, source: redis.Redis, key: str, queue: str, to_queue: str | None,
                report: Report, dry_run: bool) -> None:
    if dry_run:
        for raw in reversed(source.lrange(key, 0, -1)):  # oldest first, as a worker takes them
            _count(app, raw, queue, to_queue, report, send=False)
        return
    while True:
        raw = source.lmove(key, keys.celery_migrating(), "RIGHT", "LEFT")  # the oldest
        if raw is None:
            return
        _move(app, source, raw, queue, to_queue, report)


def _resume(app: App, source: redis.Redis, to_queue: str | None, report: Report,
            dry_run: bool) -> None:
    """What a run that stopped half-way had in flight goes first."""
    for raw in reversed(source.lrange(keys.celery_migrating(), 0, -1)):
        queue = _queue_of(raw)
        if dry_run:
            _count(app, raw, queue, to_queue, report, send=False)
        else:
            _move(app, source, raw, queue, to_queue, report)


def _move(app: App, source: redis.Redis, raw: bytes, queue: str, to_queue: str | None,
          report: Report) -> None:
    """Send one in-flight message, then take it out of the in-flight list (or keep it)."""
    if not _count(app, raw, queue, to_queue, report, send=True):
        source.rpush(keys.celery_unmigrated(queue), raw)
    source.lrem(keys.celery_migrating(), 1, raw)


def _count(app: App, raw: bytes, queue: str, to_queue: str | None, report: Report,
           send: bool) -> bool:
    try:
        sig = to_signature(app, json.loads(raw), to_queue or queue)
    except (Unconvertible, ValueError, KeyError, TypeError) as exc:
        report.kept.setdefault(queue, []).append(str(exc))
        return False
    if send:
        sig.apply_async()
    report.moved[queue] = report.moved.get(queue, 0) + 1
    return True


def _drain_unacked(app: App, source: redis.Redis, queues: set[str], to_queue: str | None,
                   report: Report, dry_run: bool) -> None:
    for tag, payload in source.hgetall(keys.KOMBU_UNACKED).items():
        message, _exchange, routing_key = json.loads(payload)
        queue = routing_key or ""
        if queue not in queues:
            continue
        raw = json.dumps(message).encode()
        if dry_run:
            _count(app, raw, queue, to_queue, report, send=False)
            continue
        source.lpush(keys.celery_migrating(), raw)  # held: a stop from here on loses nothing
        source.hdel(keys.KOMBU_UNACKED, tag)
        source.zrem(keys.KOMBU_UNACKED_INDEX, tag)
        _move(app, source, raw, queue, to_queue, report)


def _queue_of(raw: bytes) -> str:
    try:
        return json.loads(raw)["properties"]["delivery_info"]["routing_key"] or "celery"
    except (ValueError, KeyError, TypeError):
        return "celery"


def to_signature(app: App, message: dict, queue: str) -> Signature:
    """A kombu message of Celery's protocol 2 (or 1) as a fastq signature that sends the same
    call: same task id, arguments, priority, times and callbacks."""
    if message.get("content-type") != "application/json":
        raise Unconvertible(f"content type {message.get('content-type')!r}: only JSON messages "
                            "can be moved (pickle is never loaded from a queue)")
    body = message["body"]
    if message.get("properties", {}).get("body_encoding") == "base64":
        body = base64.b64decode(body)
    decoded = json.loads(body)
    headers = message.get("headers") or {}
    if "task" in headers:  # protocol 2: [args, kwargs, embed]
        args, kwargs, embed = decoded
        name, task_id = headers["task"], headers["id"]
        eta, expires = headers.get("eta"), headers.get("expires")
        hard, soft = (headers.get("timelimit") or [None, None])[:2]
    else:  # protocol 1: everything in the body
        args, kwargs, embed = decoded.get("args", ()), decoded.get("kwargs", {}), {
            "callbacks": decoded.get("callbacks"), "errbacks": decoded.get("errbacks"),
            "chain": None, "chord": decoded.get("chord")}
        name, task_id = decoded["task"], decoded["id"]
        eta, expires = decoded.get("eta"), decoded.get("expires")
        hard, soft = (decoded.get("timelimit") or [None, None])[:2]
    embed = embed or {}
    if embed.get("chord"):
        raise Unconvertible(f"{name}[{task_id}] is a member of a chord, whose counter lives in "
                            "Celery's result backend: let a Celery worker finish it")
    options: dict[str, Any] = {"task_id": task_id, "queue": queue}
    priority = (message.get("properties") or {}).get("priority")
    if isinstance(priority, int) and 0 <= priority <= 9:
        options["priority"] = priority // 2  # Celery's 0..9 two by two onto fastq's five levels
    if eta:
        options["eta"] = _when(eta)
    if expires:
        options["expires"] = _when(expires)
    if hard:
        options["time_limit"] = float(hard)
    if soft:
        options["soft_time_limit"] = float(soft)
    sig = Signature(name, args, kwargs, options, app=app)
    for callback in embed.get("callbacks") or ():
        sig.link(_step(callback, app))
    for errback in embed.get("errbacks") or ():
        sig.link_error(_step(errback, app))
    rest = embed.get("chain") or ()
    if rest:  # Celery keeps a chain's remaining steps last-first
        return chain(sig, *(_step(step, app) for step in reversed(rest)), app=app)
    return sig


KEPT_OPTIONS = ("task_id", "queue", "countdown", "eta", "expires", "soft_time_limit",
                "time_limit", "serializer")


def _step(sig: dict, app: App) -> Signature:
    """A callback or chain step of a Celery message, with the options fastq sends by
    (Celery's ``reply_to``, ``priority`` 0..9 and the like left out)."""
    if sig.get("subtask_type") == "chord":
        raise Unconvertible("a chain step is a chord: let a Celery worker finish it")
    options = dict(sig.get("options") or {})
    kept = {k: v for k, v in options.items() if k in KEPT_OPTIONS}
    for edge in ("link", "link_error"):
        if options.get(edge):
            kept[edge] = [_step(s, app) for s in options[edge]]
    kind = sig.get("subtask_type")
    if kind in ("chain", "group"):
        parts = [_step(s, app) for s in sig["kwargs"]["tasks"]]
        return maybe_signature({**sig, "kwargs": {"tasks": parts}, "options": kept}, app)
    return maybe_signature({**sig, "options": kept}, app)


def _when(value: str | float) -> datetime | float:
    if isinstance(value, int | float):
        return float(value)
    return datetime.fromisoformat(value)
