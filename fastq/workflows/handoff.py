"""Chain steps without a round trip each: the worker that runs a node runs its lone successor
next, in the same batch, or sends it with the node's outcome.

Advancing a graph normally takes two round trips per step: the finish transaction records the
node and finds its dependent ready (dag_complete.lua), then the dependent, built with the node's
result, is sent (dag_release.lua). But when dag_complete.lua makes a node ready it also names the
chain of *lone successors* ahead of it (each the only dependent of the one before, waiting on it
alone): whatever the node returns, its success releases the next one for certain. So the worker
that runs the node, once it succeeded, builds the next step from the result in hand and

- **runs it here**, right after, in the same batch (:meth:`Handoff.run_here`), when it is for one
  of the worker's queues, due now, registered here, synchronous and without a hard time limit. Its
  outcome is written with its predecessor's in one transaction, and one dag_complete.lua call
  settles both (the step is never made ready, so never sent). Nothing is lost in a crash: the
  stream entry the chain started from is acknowledged only with their outcomes, so a worker that
  dies runs the chain again from there; or else
- **sends it with the outcome** (:meth:`Handoff.release`), in the same round trip, right after
  the transaction that records it, taking it for itself in the same call.

Each step sent or run this way is marked sent (the marker dag_release.lua deduplicates by), so a
sweeper finding it in the graph's outbox, or the graph's reply listing it as ready (a step run
here that is to be retried), never sends it again.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastq.broker.base import Release
from fastq.workflows.advance import HERE, ready_send

if TYPE_CHECKING:
    from collections.abc import Sequence

KEEP = 10_000  # successors remembered (those of nodes another worker ran are never used)
WITH_OUTCOME = "with outcome"  # how a successor went out (or HERE)


class Handoff:
    """The lone successors ahead of nodes this worker made ready, and those it ran or sent."""

    def __init__(self, app: Any):
        conf = app.settings
        self._accept_pickle = "pickle" in conf.accept_content
        self._threshold = conf.compress_threshold
        self.marker_ttl_ms = int(conf.workflow_ttl * 1000)
        self._result_ttl_ms = int(conf.result_expires * 1000)
        self._next: dict[str, tuple[str, str, bytes]] = {}  # node -> (graph, successor, spec)
        self._sent: dict[str, str] = {}  # successor -> HERE or WITH_OUTCOME

    def note(self, dag_id: str, node_id: str, ahead: Sequence[bytes]) -> None:
        """``ahead``: the lone successors of ``node_id`` (just made ready), as pairs of id and
        spec, each the successor of the one before."""
        if len(self._next) >= KEEP:
            self._next.clear()
        at = node_id
        for i in range(0, len(ahead), 2):
            kid = ahead[i].decode() if isinstance(ahead[i], bytes) else ahead[i]
            self._next[at] = (dag_id, kid, ahead[i + 1])
            at = kid

    def knows(self, node_id: str) -> bool:
        return node_id in self._next

    def sent(self, node_id: str) -> str | None:
        """How ``node_id`` went out already (HERE, WITH_OUTCOME) if it did: then the graph's
        reply, which lists it as ready, must not send it again. Asked once per node."""
        return self._sent.pop(node_id, None) if self._sent else None

    def _mark(self, node_id: str, how: str) -> None:
        if len(self._sent) >= KEEP:
            self._sent.clear()
        self._sent[node_id] = how

    def successor(self, node: tuple[str, str, str, bytes]
                  ) -> tuple[str, int, int, bytes, str, str] | None:
        """The send of the successor of ``node`` (graph, node, 's' | 'f', record) with its result
        fed in, if it succeeded and its successor is known: (queue, level, due ms, envelope, id,
        graph id)."""
        _dag_id, node_id, kind, record = node
        step = self._next.get(node_id) if kind == "s" else None
        if step is None:
            return None
        return ready_send(step[0], step[1], step[2], [record], self._accept_pickle,
                          self._threshold)

    def run_here(self, node_id: str, next_id: str) -> None:
        """The worker runs ``next_id``, the successor of ``node_id``, in its batch."""
        self._next.pop(node_id, None)
        self._mark(next_id, HERE)

    def release(self, nodes: Sequence[tuple[str, str, str, bytes]]) -> Release | None:
        """The successors of the succeeded ``nodes`` to send with their outcomes (None if there
        are none)."""
        if not self._next:
            return None
        sends = []
        sent: list[tuple[str, list[str]]] = []
        for node in nodes:
            send = self.successor(node)
            if send is None:
                continue
            del self._next[node[1]]
            sends.append(send)
            sent.append((node[0], [send[4]]))
            self._mark(send[4], WITH_OUTCOME)
        if not sends:
            return None
        return Release(sends, [], sent, [], self.marker_ttl_ms, self._result_ttl_ms)
