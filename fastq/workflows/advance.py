"""Send what a graph made ready: after a round's outcomes are written (a worker child, at
``after_flush``) or when a sweeper finds it left behind by a worker that died in between.

``dag_complete.lua`` records the outcomes and says which nodes are now ready ('r', with their
parents' outcomes), failed because something upstream failed ('u', with the cause's record), or
failed themselves and have errbacks ('f'). Here each ready node gets its parents' results
prepended to its arguments, each node failed upstream its FAILURE (or REVOKED) record carrying
:class:`fastq.errors.UpstreamFailed`, each errback its message; then one round trip sends them,
each deduplicated by its id (fastq/broker/lua/dag_release.lua), and clears them from the outbox.
"""
from __future__ import annotations

import time
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import msgpack

from fastq import states
from fastq._core import decode_message, encode_message, pack_body, unpack_body, unpack_value
from fastq.broker.base import Release
from fastq.errors import DecodeError, UpstreamFailed
from fastq.result import exception_record, rebuild_exception

if TYPE_CHECKING:
    from fastq.broker.base import GraphStep
    from fastq.message import Message
    from fastq.workflows.handoff import Handoff

ERRBACK = "errback"
HERE = "here"  # a successor the worker ran in its batch (fastq/workflows/handoff.py)  # message option of an errback called (request, exc, traceback)


def advance(app: Any, steps: list[GraphStep]) -> None:
    """Send the ready nodes, failure records and errbacks of ``steps``, in one round trip."""
    release = to_release(app, steps)
    if release is not None:
        app.broker.graph_release(release)
        report_sent(app, release)


def report_sent(app: Any, release: Release) -> None:
    """The ``after_send`` hooks of the nodes and errbacks ``release`` sent (a node sent by two
    senders at once, a worker and a sweeper, may be reported by both)."""
    if app.hooks.after_send and release.sends:
        app.after_send([decode_message(data) for _q, _l, _due, data, _id, _dag in release.sends])


def to_release(app: Any, steps: list[GraphStep], handoff: Handoff | None = None
               ) -> Release | None:
    """What ``steps`` made ready, built to send (None when nothing is to be sent or cleared):
    each ready node with its parents' results fed in, a FAILURE (or REVOKED) record for each
    node failed upstream, each errback's message. With ``handoff`` (a worker's), the lone
    successors of ready nodes are noted, and nodes it sent already are left out."""
    conf = app.conf
    accept_pickle = "pickle" in conf.accept_content
    threshold = conf.compress_threshold
    sends: list[tuple[str, int, int, bytes, str]] = []
    failures: list[tuple[str, bytes]] = []
    sent: list[tuple[str, list[str]]] = []
    finished: list[str] = []
    for dag_id, reply in steps:
        left = int(reply[0])
        ids = []
        for item in reply[1:]:
            node_id, kind, spec = _text(item[0]), _text(item[1]), item[2]
            errbacks, values = item[3], item[4:]
            if kind == "r":
                ahead = int(values[0]) * 2
                if handoff is not None:
                    if ahead:
                        handoff.note(dag_id, node_id, values[1:1 + ahead])
                    how = handoff.sent(node_id)
                    if how == HERE:  # run by this worker, to be retried: only off the outbox
                        ids.append(node_id)
                    if how is not None:
                        continue
                values = values[1 + ahead:]
                ids.append(node_id)
                sends.append(ready_send(dag_id, node_id, spec, values, accept_pickle,
                                        threshold))
                continue
            ids.append(node_id)
            record = values[0]
            cause = _text(values[1]) if kind == "u" else node_id
            exc = _exception(record, cause, accept_pickle)
            failed = decode_message(msgpack.unpackb(spec)[3]) if spec else None
            if kind == "u":
                state = states.REVOKED if _state(record, accept_pickle) == states.REVOKED \
                    else states.FAILURE
                failures.append((node_id, exception_record(exc, failed.task, failed.codec,
                                                           threshold, state=state)))
            if errbacks:
                sends.extend(_errbacks(dag_id, node_id, failed, errbacks, exc, record, accept_pickle,
                                       threshold))
        sent.append((dag_id, ids))
        if left <= 0:  # finished (or gone: -1): no longer the sweeper's business
            finished.append(dag_id)
    if sends or failures or any(ids for _, ids in sent) or finished:
        return Release(sends, failures, sent, finished, int(conf.workflow_ttl * 1000),
                       int(conf.result_expires * 1000))
    return None


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def ready_send(dag_id: str, node_id: str, spec: bytes, values: list[bytes],
               accept_pickle: bool, threshold: int) -> tuple[str, int, int, bytes, str, str]:
    """A ready node's send: its envelope with its parents' outcomes (``values``) fed in."""
    queue, level, delay_ms, data, feed = msgpack.unpackb(spec)
    if feed is not None:
        outcomes = [_value(v, accept_pickle) for v in values]
        msg = decode_message(data)
        args, kwargs = unpack_body(msg.body, msg.codec, msg.compressed, accept_pickle)
        msg.body, msg.compressed = pack_body((_fed(feed, outcomes), *args), kwargs, msg.codec,
                                             threshold)
        data = encode_message(msg)
    due_ms = _now_ms() + delay_ms if delay_ms else 0
    return queue, level, due_ms, data, node_id, dag_id


def _fed(feed: Any, outcomes: list[Any]) -> Any:
    if isinstance(feed, list):
        return [_fed(f, outcomes) for f in feed]
    return outcomes[feed]


def _value(raw: bytes, accept_pickle: bool) -> Any:
    """A parent's result (None for a parent that failed, ahead of an ``on_failure="run"`` edge)."""
    if not raw or raw.startswith(b"u:"):
        return None
    record = unpack_value(raw, accept_pickle)
    return record[1] if record[0] == states.SUCCESS else None


def _state(raw: bytes, accept_pickle: bool) -> str | None:
    try:
        return unpack_value(raw, accept_pickle)[0] if raw else None
    except DecodeError:
        return None


def _exception(raw: bytes, cause: str, accept_pickle: bool) -> UpstreamFailed:
    """What failed upstream, as UpstreamFailed(cause id, its exception type, its message)."""
    try:
        record = unpack_value(raw, accept_pickle) if raw else None
    except DecodeError:
        record = None
    if not record:
        return UpstreamFailed(cause, "unknown", "its outcome is gone")
    return UpstreamFailed(cause, record[2] or "", record[1] or "")


def _errbacks(dag_id: str, node_id: str, failed: Message | None, errbacks: bytes, exc: UpstreamFailed,
              record: bytes, accept_pickle: bool, threshold: int
              ) -> list[tuple[str, int, int, bytes, str, str]]:
    """The errback messages of a failed node: ``(task_id)`` prepended for the old form;
    ``(request, [exc type, message], traceback)`` for the new one (rebuilt by the worker)."""
    try:
        trace = unpack_value(record, accept_pickle)[4] if record else None
    except DecodeError:
        trace = None
    request = _request(node_id, failed, accept_pickle)
    out = []
    for eb_id, queue, level, data, new_style in msgpack.unpackb(errbacks):
        msg = decode_message(data)
        args, kwargs = unpack_body(msg.body, msg.codec, msg.compressed, accept_pickle)
        if new_style:
            lead: tuple = (request, [exc.exc_type, exc.exc_message, exc.node_id], trace)
            msg.options = {**msg.options, ERRBACK: True}
        else:
            lead = (node_id,)
        msg.body, msg.compressed = pack_body((*lead, *args), kwargs, msg.codec, threshold)
        out.append((queue, level, 0, encode_message(msg), eb_id, dag_id))
    return out


def _request(node_id: str, failed: Message | None, accept_pickle: bool) -> dict[str, Any]:
    """What an errback sees of the failed task as ``request`` (Celery's Context fields)."""
    request: dict[str, Any] = {"id": node_id}
    if failed is not None:
        try:
            args, kwargs = unpack_body(failed.body, failed.codec, failed.compressed,
                                       accept_pickle)
        except DecodeError:
            args, kwargs = (), {}
        request.update(task=failed.task, args=list(args), kwargs=kwargs, root_id=failed.root_id,
                       parent_id=failed.parent_id, group=failed.group_id, dag_id=failed.dag_id,
                       retries=failed.attempt)
    return request


def errback_arguments(args: tuple) -> tuple:
    """In the worker: an errback's ``(request dict, [type, message, node], traceback, ...)`` as
    Celery passes them: a request object, the exception, the traceback text."""
    request, (exc_type, message, _node), trace, *rest = args
    exc = rebuild_exception(exc_type, [message], message, trace)
    return (SimpleNamespace(**request), exc, trace, *rest)


def _now_ms() -> int:
    return int(time.time() * 1000)
