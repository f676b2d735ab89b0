"""Handles on many results: :class:`GroupResult` (Celery's) and :class:`DagResult` (``app.dag()``)."""
from __future__ import annotations

import time
from typing import Any

import msgpack

from fastq import current, states
from fastq.errors import TimeoutError as FastqTimeoutError
from fastq.result import AsyncResult


class GroupResult:
    """The results of a group, in the group's order. ``get()`` waits for all of them."""

    def __init__(self, id: str | None, results: list[Any], app: Any = None,  # noqa: A002
                 parent: AsyncResult | None = None):
        self.id = id
        self.results = list(results)
        self.app = app if app is not None else current.app()
        self.parent = parent

    def __repr__(self) -> str:
        return f"<GroupResult: {self.id} [{', '.join(str(r.id) for r in self.results)}]>"

    def __len__(self) -> int:
        return len(self.results)

    def __iter__(self):
        return iter(self.results)

    def __getitem__(self, index: int) -> Any:
        return self.results[index]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, GroupResult) and other.id == self.id \
            and other.results == self.results

    __hash__ = None  # type: ignore[assignment]

    def get(self, timeout: float | None = None, propagate: bool = True, **_celery_opts: Any
            ) -> list[Any]:
        """Every member's value, in order; the first failure (in order) is raised when
        ``propagate``. ``timeout`` bounds the whole wait."""
        deadline = None if timeout is None else time.monotonic() + timeout
        values = []
        for res in self.results:
            left = None if deadline is None else max(deadline - time.monotonic(), 0.0)
            try:
                values.append(res.get(timeout=left, propagate=propagate))
            except FastqTimeoutError:
                raise FastqTimeoutError(f"group {self.id} not ready after {timeout} s") from None
        return values

    join = get

    def completed_count(self) -> int:
        """How many members succeeded (Celery's meaning)."""
        return sum(s == states.SUCCESS for s in self._leaf_states())

    def _leaf_states(self) -> list[str]:
        out = []
        for r in self.results:
            out.extend(r._leaf_states() if isinstance(r, GroupResult) else [r.state])
        return out

    def ready(self) -> bool:
        return all(s in states.READY_STATES for s in self._leaf_states())

    def successful(self) -> bool:
        return all(s == states.SUCCESS for s in self._leaf_states())

    def failed(self) -> bool:
        return any(s == states.FAILURE for s in self._leaf_states())

    def waiting(self) -> bool:
        return not self.ready()

    def leaf_ids(self) -> list[str]:
        out = []
        for r in self.results:
            out.extend(r.leaf_ids() if isinstance(r, GroupResult) else [r.id])
        return out

    def revoke(self, terminate: bool = False, **_celery_opts: Any) -> None:
        """Revoke every member: none that has not run yet will run (nor anything after it)."""
        self.app.control.revoke(self.leaf_ids(), terminate=terminate)

    def forget(self) -> None:
        self.app.broker.forget_results(self.leaf_ids())

    def save(self) -> GroupResult:
        """Keep the member ids in Redis (``result_expires``) for :meth:`restore`."""
        if self.id is None:
            raise ValueError("this GroupResult has no id to save it under")
        self.app.broker.save_group(self.id, msgpack.packb(_ids(self)),
                                   int(self.app.conf.result_expires * 1000))
        return self

    @classmethod
    def restore(cls, id: str, app: Any = None) -> GroupResult | None:  # noqa: A002
        app = app if app is not None else current.app()
        data = app.broker.load_group(id)
        if data is None:
            return None
        return _from_ids(id, msgpack.unpackb(data), app)


def _ids(res: Any) -> Any:
    if isinstance(res, GroupResult):
        return {"id": res.id, "results": [_ids(r) for r in res.results]}
    return res.id


def _from_ids(group_id: str | None, tree: Any, app: Any) -> GroupResult:
    items = tree["results"] if isinstance(tree, dict) else tree
    return GroupResult(group_id, [_from_ids(t["id"], t, app) if isinstance(t, dict)
                                  else AsyncResult(t, app) for t in items], app=app)


class DagResult:
    """The handle of an ``app.dag()`` graph: its nodes by name, and the values of its sinks."""

    def __init__(self, id: str, names: dict[str, str], sinks: list[str], app: Any = None):  # noqa: A002
        self.id = id
        self.names = dict(names)
        self.sinks = list(sinks)
        self.app = app if app is not None else current.app()

    def __repr__(self) -> str:
        return f"<DagResult: {self.id} {len(self.names)} nodes>"

    def __getitem__(self, name: str) -> AsyncResult:
        return AsyncResult(self.names[name], self.app)

    def get(self, timeout: float | None = None, propagate: bool = True) -> Any:
        """The sink's value (one sink), or {name: value} of every sink."""
        by_id = {v: k for k, v in self.names.items()}
        group = GroupResult(self.id, [AsyncResult(self.names[s], self.app) for s in self.sinks],
                            app=self.app)
        values = group.get(timeout=timeout, propagate=propagate)
        if len(self.sinks) == 1:
            return values[0]
        return {by_id[self.names[s]]: v for s, v in zip(self.sinks, values, strict=True)}

    def nodes(self) -> dict[str, str]:
        """Each node's state, by name."""
        return {name: AsyncResult(node_id, self.app).state for name, node_id in self.names.items()}

    def ready(self) -> bool:
        return all(s in states.READY_STATES for s in self.nodes().values())

    def revoke(self, terminate: bool = False) -> None:
        """Cancel every node not yet run (and stop running ones when ``terminate``)."""
        self.app.control.revoke(list(self.names.values()), terminate=terminate)
