"""``app.dag()``: a graph of named nodes, ``d.add("parse", parse.s(), after=["fetch"])``.

Nodes are named by strings, so a forward reference can close a cycle: :meth:`Dag.submit` refuses
it, naming the cycle, before anything is sent. A node after exactly one other gets that node's
result prepended to its arguments (unless its signature is immutable); after several, the list of
their results in ``after`` order. ``on_failure="run"`` makes a node run even when a node it waits
for failed (a cleanup step); by default it fails with ``UpstreamFailed``.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fastq.errors import WorkflowError
from fastq.workflows.canvas import maybe_signature
from fastq.workflows.graph import Graph, Out, find_cycle
from fastq.workflows.results import DagResult

ON_FAILURE = ("fail", "run")


class Dag:
    def __init__(self, app: Any):
        self.app = app
        self._nodes: dict[str, tuple[Any, list[str], str]] = {}

    def add(self, name: str, sig: Any, after: Iterable[str] = (), on_failure: str = "fail"
            ) -> Dag:
        if not isinstance(name, str) or not name:
            raise WorkflowError(f"a dag node needs a non-empty string name, not {name!r}")
        if name in self._nodes:
            raise WorkflowError(f"dag node {name!r} is added twice")
        if on_failure not in ON_FAILURE:
            raise WorkflowError(f"on_failure must be one of {ON_FAILURE}, not {on_failure!r}")
        after = [after] if isinstance(after, str) else list(after)
        self._nodes[name] = (maybe_signature(sig, self.app), after, on_failure)
        return self

    def submit(self) -> DagResult:
        """Check the whole graph, then send it (waiting nodes first, roots in the same call)."""
        if not self._nodes:
            raise WorkflowError("an empty dag has nothing to run")
        for name, (_sig, after, _) in self._nodes.items():
            for dep in after:
                if dep not in self._nodes:
                    raise WorkflowError(f"dag node {name!r} runs after {dep!r}, which is not a "
                                        "node of this dag")
        cycle = find_cycle({name: after for name, (_s, after, _f) in self._nodes.items()})
        if cycle:
            raise WorkflowError("the dag has a cycle: " + " -> ".join(cycle))
        graph = Graph(self.app)
        outs: dict[str, Out] = {}
        for name in _run_order(self._nodes):
            sig, after, on_failure = self._nodes[name]
            if not after:
                out = graph.add(sig)
            else:
                parts = [outs[a] for a in after]
                feed = parts[0].feed if len(parts) == 1 else [p.feed for p in parts]
                out = graph.add(sig, Out([s for p in parts for s in p.sinks], feed),
                                anyway=on_failure == "run")
            outs[name] = out
            graph.names[name] = out.sinks[-1]
        graph.submit()
        waited_for = {dep for _s, after, _f in self._nodes.values() for dep in after}
        return DagResult(graph.id, graph.names, [n for n in self._nodes if n not in waited_for],
                         self.app)


def _run_order(nodes: dict[str, tuple[Any, list[str], str]]) -> list[str]:
    """Names so that every node comes after what it waits for (the graph has no cycle)."""
    order: list[str] = []
    seen: set[str] = set()
    for start in nodes:
        stack = [(start, iter(nodes[start][1]))]
        if start in seen:
            continue
        seen.add(start)
        while stack:
            name, deps = stack[-1]
            dep = next(deps, None)
            if dep is None:
                order.append(name)
                stack.pop()
            elif dep not in seen:
                seen.add(dep)
                stack.append((dep, iter(nodes[dep][1])))
    return order
