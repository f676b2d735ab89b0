"""What happens to a message once its task has run: the one place that writes outcomes.

Used by children for ordinary results and by the supervisor for tasks it had to kill (hard time
limit, revoke with terminate), so that both follow the same retry and dead-letter rules.
"""
from __future__ import annotations

import time
import traceback
from dataclasses import replace
from typing import TYPE_CHECKING, NamedTuple

import msgpack

from fastq import states
from fastq._core import decode_message, encode_message
from fastq.broker.base import Finish
from fastq.errors import DeadLettered, DecodeError, Ignore, Reject, TaskRevokedError
from fastq.message import IGNORE_RESULT
from fastq.middleware import SkipMessage
from fastq.result import exception_record, success_record
from fastq.retry import Retry

if TYPE_CHECKING:
    from fastq.message import Message
    from fastq.task import Task


def succeeded(done: Finish, task: Task, msg: Message, value, threshold: int) -> None:
    keep = not task.ignore_result and not (msg.options and IGNORE_RESULT in msg.options)
    if msg.dag_id or keep:  # a workflow node's dependents need the value
        record = success_record(value, task.name, msg.codec, threshold, msg.children)
        if keep:
            done.results.append((msg.id, record))
        if msg.dag_id:
            done.nodes.append((msg.dag_id, msg.id, "s", record))
    if msg.idem_key:
        done.releases.append((msg.idem_key, msg.id))


def _terminal_failure(done: Finish, msg: Message, record: bytes, keep: bool) -> None:
    """Record a task's final failure (``keep``: as its result too); a workflow node's failure is
    also recorded in its graph, which fails or runs its dependents."""
    if keep:
        done.results.append((msg.id, record))
    if msg.dag_id:
        done.nodes.append((msg.dag_id, msg.id, "f", record))


def _error_entry(msg: Message, exc: BaseException) -> dict:
    return {"attempt": msg.attempt, "type": type(exc).__name__, "message": str(exc),
            "traceback": "".join(traceback.format_exception(exc)), "at": int(time.time() * 1000)}


class Failed(NamedTuple):
    """What :func:`failed` decided: the state written (RETRY or FAILURE), the delay before the
    next attempt (RETRY), and why the message was dead-lettered (or None)."""

    state: str
    countdown: float = 0.0
    dead_reason: str | None = None


def failed(done: Finish, task: Task, msg: Message, queue: str, exc: BaseException,
           threshold: int, consumer: str, entry: bytes | None = None) -> Failed:
    """Retry the message if its policy (or ``self.retry``) says so, else record the failure.

    A task that was retried and has no attempts left also goes to the dead-letter queue, with the
    error of every attempt.
    """
    if isinstance(exc, Ignore | Reject):
        return _refused(done, task, msg, queue, exc, threshold, consumer, entry)
    policy = task.retry_policy
    requested = isinstance(exc, Retry)
    cause = exc.exc if requested and exc.exc is not None else exc
    limit = exc.max_retries if requested and exc.max_retries is not None else policy.max_retries
    errors = [*msg.options.get("errors", ()), _error_entry(msg, cause)]
    if (requested or policy.retries_automatically(cause)) and msg.attempt < limit:
        delay = exc.countdown if requested and exc.countdown is not None \
            else policy.delay_for(msg.attempt)
        retry(done, task, msg, queue, cause, errors, delay, threshold)
        return Failed(states.RETRY, delay)
    if not task.ignore_result or msg.dag_id:
        _terminal_failure(done, msg, exception_record(cause, task.name, msg.codec, threshold),
                          not task.ignore_result)
    if msg.idem_key:
        done.releases.append((msg.idem_key, msg.id))
    if msg.attempt > 0 or requested or policy.retries_automatically(cause):
        # Kept as the next attempt would be sent: a requeue from the DLQ then counts on and keeps
        # every error, instead of repeating this attempt's number and losing its error.
        kept = replace(msg, attempt=msg.attempt + 1, options={**msg.options, "errors": errors})
        reason = f"failed after {msg.attempt + 1} attempts: {type(cause).__name__}: {cause}"
        dead_letter(done, queue, encode_message(kept), reason, msg, consumer, entry, errors,
                    settled=True)  # its FAILURE, with the task's own error, is written above
        return Failed(states.FAILURE, 0.0, reason)
    return Failed(states.FAILURE)


def _refused(done: Finish, task: Task, msg: Message, queue: str, exc: Ignore | Reject,
             threshold: int, consumer: str, entry: bytes | None) -> Failed:
    """The task raised Ignore (no outcome) or Reject: back in its queue with ``requeue``, else
    kept in the DLQ with the reason and recorded REJECTED. Either way this delivery is acked."""
    if isinstance(exc, Reject) and exc.requeue:
        done.delayed.append((queue, msg.priority, int(time.time() * 1000), encode_message(msg)))
        return Failed(states.REJECTED)
    if msg.idem_key:
        done.releases.append((msg.idem_key, msg.id))
    if isinstance(exc, Ignore):
        return Failed(states.IGNORED)
    record = exception_record(exc, task.name, msg.codec, threshold, state=states.REJECTED)
    _terminal_failure(done, msg, record, True)
    reason = str(exc)
    dead_letter(done, queue, encode_message(msg), reason, msg, consumer, entry, settled=True)
    return Failed(states.REJECTED, 0.0, reason)


def retry(done: Finish, task: Task, msg: Message, queue: str, exc: BaseException,
          errors: list[dict], delay_s: float, threshold: int) -> None:
    """Schedule the next attempt in the delayed set (never by sleeping) and record RETRY."""
    nxt = replace(msg, attempt=msg.attempt + 1, options={**msg.options, "errors": errors})
    due_ms = int(time.time() * 1000 + max(delay_s, 0) * 1000)
    done.delayed.append((queue, msg.priority, due_ms, encode_message(nxt)))
    done.states.append((msg.id, exception_record(exc, task.name, msg.codec, threshold,
                                                 state=states.RETRY)))


def revoked(done: Finish, task: Task | None, msg: Message, reason: str, threshold: int) -> None:
    skipped(done, task, msg, reason, states.REVOKED, threshold)


def skipped(done: Finish, task: Task | None, msg: Message, reason: str, state: str | None,
            threshold: int) -> None:
    """A message acknowledged without running its task (a step raised SkipMessage): REVOKED
    with TaskRevokedError(reason), FAILURE with SkipMessage(reason), or no record (None)."""
    keep = state is not None and (task is None or not task.ignore_result)
    if keep or msg.dag_id:
        exc = SkipMessage(reason, state) if state == states.FAILURE else TaskRevokedError(reason)
        record = exception_record(exc, msg.task, msg.codec, threshold,
                                  state=state or states.REVOKED)
        _terminal_failure(done, msg, record, keep)
    if msg.idem_key:
        done.releases.append((msg.idem_key, msg.id))


def dead_letter(done: Finish, queue: str, data: bytes, reason: str, msg: Message | None,
                consumer: str, entry: bytes | None = None, errors: list[dict] | None = None,
                stream: str = "", threshold: int = 0, settled: bool = False,
                error: type[Exception] = DeadLettered) -> None:
    """Keep a message, with why, in the queue's dead-letter stream. Unless the caller has
    ``settled`` the task already (written its outcome), a task whose id is known gets a FAILURE
    carrying the reason (as ``error``: DeadLettered, or NotRegistered for an unknown task, as
    Celery reports it), so ``get()`` raises it instead of waiting for a run that never comes,
    and its uniqueness key is released (it is no longer queued or running)."""
    if msg is None and data:  # e.g. poison: the envelope is fine, only its runs never finished
        try:
            msg = decode_message(data)
        except DecodeError:
            pass
    fields: dict = {"m": data, "reason": reason, "task": msg.task if msg else "",
                    "id": msg.id if msg else "", "stream": stream, "entry": entry or b"",
                    "failed_at": str(int(time.time() * 1000)), "consumer": consumer,
                    "attempts": str(msg.attempt + 1 if msg else 1)}
    if errors:
        fields["errors"] = msgpack.packb(errors)
        fields["traceback"] = errors[-1]["traceback"]
    done.dead.append((queue, fields))
    if msg is not None and not settled:
        _terminal_failure(done, msg, exception_record(error(reason), msg.task, msg.codec,
                                                      threshold), True)
        if msg.idem_key:
            done.releases.append((msg.idem_key, msg.id))
