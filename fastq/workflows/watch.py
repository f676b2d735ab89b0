"""``depends_on``: a graph waiting on tasks sent outside it.

Such a task is a node of the graph that is never sent (fastq/workflows/graph.py); submitting the
graph announces the wait (``keys.WATCHED``, and the ``keys.WATCHES`` stream that children
follow). The task's outcome reaches the graph on three paths, each idempotent because
dag_complete.lua records a node's outcome once:

- the child that ran it, just after the round that wrote its result (:class:`DependencyWatch`);
- the submitter, just after announcing the wait, for a task that had finished already;
- the sweeper (every ``workflow_sweep_s``), for a task that finished in the moment between the
  announcement and a child's next look at the stream, and after a crash.

The outcome is the task's stored result: a task with ``ignore_result=True`` leaves none, so a
wait on it is settled only by the child that runs it, if that child knows of the wait.
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from fastq import states
from fastq._core import unpack_value
from fastq.errors import DecodeError
from fastq.middleware import Middleware
from fastq.workflows.advance import advance

if TYPE_CHECKING:
    from fastq.broker.base import Finish

SWEEP_PAGE = 1000  # waits the sweeper looks at per sweep


def outcome_kind(record: bytes, accept_pickle: bool) -> str:
    """'s' for a SUCCESS record, 'f' for any other terminal one (FAILURE, REVOKED)."""
    try:
        return "s" if unpack_value(record, accept_pickle)[0] == states.SUCCESS else "f"
    except DecodeError:
        return "f"


def settle_outside(app: Any, waits: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """Record in each (graph id, task id) wait the task's stored outcome, where it has one;
    returns the waits settled."""
    broker = app.broker
    task_ids = list(dict.fromkeys(task_id for _, task_id in waits))
    if not task_ids:
        return []
    records = dict(zip(task_ids, broker.peek_results(task_ids), strict=True))
    accept_pickle = "pickle" in app.conf.accept_content
    nodes = [(dag_id, task_id, outcome_kind(records[task_id], accept_pickle), records[task_id])
             for dag_id, task_id in waits if records.get(task_id) is not None]
    return _settle(app, broker, nodes)


def _settle(app: Any, broker: Any, nodes: list[tuple[str, str, str, bytes]]
            ) -> list[tuple[str, str]]:
    """Record the outcomes, forget the waits they settle, send what became ready."""
    if not nodes:
        return []
    steps = broker.graph_complete(nodes, int(app.conf.result_expires * 1000))
    settled = [(dag_id, task_id) for dag_id, task_id, _, _ in nodes]
    broker.unwatch(settled)
    advance(app, steps)
    return settled


def sweep_outside(app: Any, offset: int) -> int:
    """Settle one page of waits whose task has finished; returns the offset of
    the next page (0 after the last), so every wait is looked at in turn."""
    waits = app.broker.watched(offset, SWEEP_PAGE)
    settled = settle_outside(app, waits)
    return offset + len(waits) - len(settled) if len(waits) == SWEEP_PAGE else 0


class DependencyWatch(Middleware):
    """A child's step after each round: the round's outcomes of tasks that a graph waits for are
    recorded in that graph. The child learns of waits from the ``keys.WATCHES`` stream, at
    most every ``revocation_sync_ms`` and only when it finishes something."""

    def __init__(self, app: Any):
        self.app = app
        self.waits: dict[str, dict[str, float]] = {}  # task id -> graph id -> until (epoch s)
        self._cursor: str | None = None
        self._next_sync = 0.0

    def child_init(self, child: Any) -> None:
        self.waits, self._cursor, self._next_sync = {}, None, 0.0

    def after_flush(self, child: Any, finish: Finish) -> None:
        now = time.monotonic()
        if now >= self._next_sync:
            self._sync(child.broker, now)
        waits = self.waits
        if not waits:
            return
        accept_pickle = "pickle" in self.app.conf.accept_content
        outcomes = [(task_id, record, None) for task_id, record in finish.results]
        outcomes += [(task_id, record, kind) for _dag, task_id, kind, record in finish.nodes]
        nodes = []
        for task_id, record, kind in outcomes:
            graphs = waits.pop(task_id, None)
            if graphs:
                kind = kind or outcome_kind(record, accept_pickle)
                nodes += [(dag_id, task_id, kind, record) for dag_id in graphs]
        _settle(self.app, child.broker, nodes)

    def _sync(self, broker: Any, now: float) -> None:
        self._next_sync = now + self.app.conf.revocation_sync_ms / 1000.0
        if self._cursor is None:
            new, self._cursor = broker.live_watches()
            self.waits = {}
        else:
            self._cursor, new = broker.watches_since(self._cursor)
        for dag_id, task_id, until in new:
            self.waits.setdefault(task_id, {})[dag_id] = until
        if new and len(self.waits) > 10_000:  # forget the waits of graphs past their deadline
            wall = time.time()
            self.waits = {t: kept for t, g in self.waits.items()
                          if (kept := {d: u for d, u in g.items() if u > wall})}


__all__ = ["DependencyWatch", "outcome_kind", "settle_outside", "sweep_outside"]
