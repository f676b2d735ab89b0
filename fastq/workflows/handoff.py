"""A chain step in one round trip: the worker that runs a node sends its lone successor with
the node's outcome.

Advancing a graph normally takes two round trips per step: the finish transaction records the
node and finds its dependent ready (dag_complete.lua), then the dependent, built with the node's
result, is sent (dag_release.lua). But when dag_complete.lua makes a node ready it also says
which dependent that node's success will release for certain (its *lone successor*: its only
dependent, waiting on it alone). The worker keeps that; if it runs the node itself (it sent the
node to itself, :meth:`fastq.broker.redis.RedisBroker._queue_release`) and the node succeeds, it
builds the successor from the result in hand and sends it in the same round trip as the
outcome, right after the transaction that records it, and takes it for itself in the same call.

Safe because the send is deduplicated by the node id like every release: a node re-run after a
crash, or a sweeper finding the successor in the outbox, cannot send it twice; and a successor
sent this way is dropped from what the graph's reply asks to send.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastq.broker.base import Release
from fastq.workflows.advance import ready_send

if TYPE_CHECKING:
    from collections.abc import Sequence

KEEP = 10_000  # successors remembered (those of nodes another worker ran are never used)


class Handoff:
    """The lone successors of nodes this worker made ready, and those it sent already."""

    def __init__(self, app: Any):
        self.app = app
        self._next: dict[str, tuple[str, str, bytes]] = {}  # node -> (graph, successor, spec)
        self._sent: set[str] = set()  # successors sent with their predecessor's outcome

    def note(self, dag_id: str, node_id: str, next_id: str, next_spec: bytes) -> None:
        """``node_id`` (just made ready) releases ``next_id`` when it succeeds."""
        if len(self._next) >= KEEP:
            self._next.clear()
        self._next[node_id] = (dag_id, next_id, next_spec)

    def sent(self, node_id: str) -> bool:
        """Whether ``node_id`` went out with its predecessor's outcome (then the graph's reply,
        which lists it as ready, must not send it again); asked once per node."""
        if node_id in self._sent:
            self._sent.discard(node_id)
            return True
        return False

    def release(self, nodes: Sequence[tuple[str, str, str, bytes]]) -> Release | None:
        """The successors of the succeeded ``nodes`` (graph, node, 's' | 'f', record) to send
        with their outcomes, each with the result fed in (None if there are none)."""
        if not self._next:
            return None
        conf = self.app.conf
        sends = []
        sent: list[tuple[str, list[str]]] = []
        for _dag_id, node_id, kind, record in nodes:
            step = self._next.pop(node_id, None)
            if step is None or kind != "s":
                continue
            dag_id, next_id, spec = step
            sends.append(ready_send(next_id, spec, [record], "pickle" in conf.accept_content,
                                    conf.compress_threshold))
            sent.append((dag_id, [next_id]))
            if len(self._sent) >= KEEP:
                self._sent.clear()
            self._sent.add(next_id)
        if not sends:
            return None
        return Release(sends, [], sent, [], int(conf.workflow_ttl * 1000),
                       int(conf.result_expires * 1000))
