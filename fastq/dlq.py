"""Dead-letter queue management: list, show, requeue and purge what workers could not run.

A dead letter is an entry of the stream ``fastq:{Q}:dlq`` (docs/architecture.md §Keys) written by a
worker child (``Child._dead_letter``) with the fields ``m`` (the original envelope bytes),
``reason``, ``task``, ``id``, ``stream``, ``entry``, ``failed_at`` (epoch ms) and ``consumer``, and,
when present, ``errors`` (msgpack list of ``{attempt, type, message, traceback}``), ``traceback``
and ``attempts``.

Requeueing puts the *original* envelope bytes back into the ready stream of its queue at the
priority in the envelope, so the task keeps its id and arguments, and deletes the dead letter; both
happen in one Lua script (``lua/requeue.lua``) per entry, so a dead letter is never both requeued
and kept, nor requeued twice by two concurrent callers. A dead letter whose envelope cannot be
decoded is refused (with the reason) rather than requeued, since a worker would only dead-letter it
again; purge it instead.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgpack
import structlog

from fastq._core import decode_message
from fastq.errors import DecodeError

if TYPE_CHECKING:
    from fastq.app import App

log = structlog.get_logger("fastq.dlq")
_ENTRY_ID = re.compile(r"^\d+(-\d+)?$")
_SCAN_CHUNK = 500


def _text(value: bytes | str | None) -> str:
    if value is None:
        return ""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _int(value: bytes | str | None, default: int = 0) -> int:
    try:
        return int(_text(value) or default)
    except ValueError:
        return default


@dataclass(slots=True)
class DeadLetter:
    """One entry of a queue's dead-letter stream, decoded for people and tools."""

    queue: str
    dlq_entry_id: str
    task_id: str  # "" when the envelope was undecodable
    task: str  # "" when the envelope was undecodable
    reason: str
    failed_at: int  # epoch ms
    attempts: int  # the ``attempts`` field, else len(errors), else the envelope's attempt counter
    errors: list[dict[str, Any]] = field(default_factory=list)  # {attempt, type, message, traceback}
    traceback: str | None = None
    envelope: bytes = b""  # the original message bytes, exactly as they were sent
    priority: int | None = None  # the envelope's level; None when it cannot be decoded
    decode_error: str | None = None  # why the envelope cannot be decoded (then it is not requeued)
    stream: str = ""  # the ready stream and entry it was taken from
    entry: str = ""
    consumer: str = ""  # the worker child that dead-lettered it

    @property
    def requeueable(self) -> bool:
        return self.decode_error is None

    @classmethod
    def from_entry(cls, queue: str, entry_id: bytes | str, fields: dict) -> DeadLetter:
        get = fields.get
        envelope = get(b"m") or b""
        task, task_id = _text(get(b"task")), _text(get(b"id"))
        priority = None
        decode_error = None
        envelope_attempt = 0
        try:
            msg = decode_message(envelope)
        except DecodeError as exc:
            decode_error = str(exc) or "undecodable envelope"
        else:
            priority, envelope_attempt = msg.priority, msg.attempt
            task, task_id = task or msg.task, task_id or msg.id
        errors: list[dict[str, Any]] = []
        raw_errors = get(b"errors")
        if raw_errors:
            try:
                decoded = msgpack.unpackb(raw_errors, raw=False)
            except Exception:  # noqa: BLE001 - a damaged field must not hide the dead letter
                decoded = None
            if isinstance(decoded, list):
                errors = [e if isinstance(e, dict) else {"message": repr(e)} for e in decoded]
        if get(b"attempts") is not None:
            attempts = _int(get(b"attempts"))
        else:
            attempts = len(errors) if errors else envelope_attempt
        traceback = _text(get(b"traceback")) or None
        return cls(queue=queue, dlq_entry_id=_text(entry_id), task_id=task_id, task=task,
                   reason=_text(get(b"reason")), failed_at=_int(get(b"failed_at")),
                   attempts=attempts, errors=errors, traceback=traceback, envelope=envelope,
                   priority=priority, decode_error=decode_error, stream=_text(get(b"stream")),
                   entry=_text(get(b"entry")), consumer=_text(get(b"consumer")))


@dataclass(slots=True)
class RequeueReport:
    """What :meth:`DeadLetters.requeue_report` did, entry by entry."""

    requeued: list[tuple[DeadLetter, str]] = field(default_factory=list)  # (dead letter, new id)
    refused: list[tuple[DeadLetter, str]] = field(default_factory=list)  # (dead letter, why)
    missing: list[str] = field(default_factory=list)  # ids that matched nothing (or went away)

    def __len__(self) -> int:
        return len(self.requeued)


class DeadLetters:
    """Dead-letter management for ``app``'s broker (any broker: it uses the broker's dead-letter
    verbs of ``fastq.broker.base.Control``).

    ``queue=None`` means every known queue (the ``fastq:queues`` set). Ids given to :meth:`show`,
    :meth:`requeue` and :meth:`purge` may be dead-letter entry ids (``1700000000000-0``) or task ids.
    """

    def __init__(self, app: App):
        self.app = app
        self.broker = app.broker

    # -- reading ---------------------------------------------------------------------------
    def queues(self, queue: str | None = None) -> list[str]:
        if queue:
            return [queue]
        return self.broker.queues()

    def _scan(self, queue: str) -> Iterator[DeadLetter]:
        """Every dead letter of ``queue``, oldest first, read in chunks."""
        start = "-"
        while True:
            entries = self.broker.dead_letters(queue, count=_SCAN_CHUNK, start=start)
            for entry_id, fields in entries:
                yield DeadLetter.from_entry(queue, entry_id, fields)
            if len(entries) < _SCAN_CHUNK:
                return
            start = "(" + _text(entries[-1][0])

    def list(self, queue: str | None = None, task: str | None = None,
             limit: int | None = 100) -> list[DeadLetter]:
        """Dead letters, oldest first per queue (queues by name), at most ``limit`` (None: all)."""
        out: list[DeadLetter] = []
        if limit is not None and limit <= 0:
            return out
        for q in self.queues(queue):
            for dl in self._scan(q):
                if task is not None and dl.task != task:
                    continue
                out.append(dl)
                if limit is not None and len(out) >= limit:
                    return out
        return out

    def count(self, queue: str | None = None) -> int:
        return sum(self.broker.dead_letter_count(q) for q in self.queues(queue))

    def find(self, ident: str, queue: str | None = None) -> list[DeadLetter]:
        """The dead letters with entry id ``ident`` or, failing that, task id ``ident``.

        Two queues' dead-letter streams may hold the same entry id; pass ``queue`` to pick one.
        """
        return self._find(ident, queue)[0]

    def _find(self, ident: str, queue: str | None) -> tuple[list[DeadLetter], bool]:
        """(matches, whether they matched by entry id)."""
        ident = ident.strip()
        if not ident:
            return [], False
        queues = self.queues(queue)
        found: list[DeadLetter] = []
        if _ENTRY_ID.match(ident):
            for q in queues:
                found += [DeadLetter.from_entry(q, eid, fields) for eid, fields in
                          self.broker.dead_letters(q, count=None, start=ident, end=ident)]
            if found:
                return found, True
        for q in queues:
            found += [dl for dl in self._scan(q) if dl.task_id == ident]
        return found, False

    def show(self, ident: str, queue: str | None = None) -> DeadLetter | None:
        """The dead letter with this entry id or task id (the first, if several), else None."""
        found = self.find(ident, queue)
        return found[0] if found else None

    def _select(self, ids: Iterable[str] | str | None, task: str | None, all: bool,
                queue: str | None) -> tuple[list[DeadLetter], list[str]]:
        if isinstance(ids, str):
            ids = [ids]
        ids = [i for i in (ids or []) if i]
        chosen = sum((bool(ids), task is not None, bool(all)))
        if chosen != 1:
            raise ValueError("choose exactly one of: ids, task=NAME, all=True")
        if ids:
            seen: set[tuple[str, str]] = set()
            out: list[DeadLetter] = []
            missing: list[str] = []
            for ident in ids:
                found, by_entry = self._find(ident, queue)
                if not found:
                    missing.append(ident)
                elif by_entry and len({dl.queue for dl in found}) > 1:
                    where = ", ".join(sorted({dl.queue for dl in found}))
                    raise ValueError(f"dead-letter entry id {ident} is in several queues ({where});"
                                     " name the queue")
                for dl in found:
                    if (dl.queue, dl.dlq_entry_id) not in seen:
                        seen.add((dl.queue, dl.dlq_entry_id))
                        out.append(dl)
            return out, missing
        return self.list(queue, task=task, limit=None), []

    # -- requeue ---------------------------------------------------------------------------
    def requeue(self, ids: Iterable[str] | str | None = None, task: str | None = None,
                all: bool = False, queue: str | None = None) -> int:
        """Put dead letters back into their queue's ready stream; returns how many were.

        Undecodable ones are refused and kept (logged); see :meth:`requeue_report` for details.
        """
        return len(self.requeue_report(ids, task, all, queue))

    def requeue_report(self, ids: Iterable[str] | str | None = None, task: str | None = None,
                       all: bool = False, queue: str | None = None) -> RequeueReport:
        selected, missing = self._select(ids, task, all, queue)
        report = RequeueReport(missing=missing)
        todo: list[DeadLetter] = []
        for dl in selected:
            if dl.decode_error is not None:
                why = (f"undecodable envelope ({dl.decode_error}); a worker would only dead-letter "
                       "it again, purge it instead")
                report.refused.append((dl, why))
                log.warning("dead letter not requeued", queue=dl.queue, entry=dl.dlq_entry_id,
                            reason=why)
            else:
                todo.append(dl)
        for start in range(0, len(todo), _SCAN_CHUNK):
            chunk = todo[start:start + _SCAN_CHUNK]
            self._forget_outcomes(chunk)
            replies = self.broker.requeue_dead(
                [(dl.queue, dl.dlq_entry_id, dl.priority) for dl in chunk])  # type: ignore[misc]
            for dl, reply in zip(chunk, replies, strict=True):
                if isinstance(reply, Exception):
                    report.refused.append((dl, str(reply)))
                    log.warning("dead letter not requeued", queue=dl.queue,
                                entry=dl.dlq_entry_id, reason=str(reply))
                elif reply is None:  # requeued or purged meanwhile by someone else
                    report.missing.append(dl.dlq_entry_id)
                else:
                    report.requeued.append((dl, reply))
        if report.requeued:
            log.info("dead letters requeued", count=len(report.requeued))
        return report

    def _forget_outcomes(self, dead: list[DeadLetter]) -> None:
        """A requeued task is pending again: drop the FAILURE record (and RETRY state) of the run
        that dead-lettered it, before it can run again, so that ``get()`` and ``state`` wait for
        the new run instead of answering with the old failure (result lists are only appended to).
        """
        self.broker.forget_results([dl.task_id for dl in dead if dl.task_id])

    # -- purge -----------------------------------------------------------------------------
    def purge(self, ids: Iterable[str] | str | None = None, task: str | None = None,
              all: bool = False, queue: str | None = None) -> int:
        """Delete dead letters for good; returns how many were deleted."""
        if all and not ids and task is None:
            return sum(self.broker.purge_dead(q) for q in self.queues(queue))
        selected, _missing = self._select(ids, task, all, queue)
        by_queue: dict[str, list[str]] = {}
        for dl in selected:
            by_queue.setdefault(dl.queue, []).append(dl.dlq_entry_id)
        return sum(self.broker.delete_dead(q, entry_ids) for q, entry_ids in by_queue.items())


__all__ = ["DeadLetter", "DeadLetters", "RequeueReport"]
