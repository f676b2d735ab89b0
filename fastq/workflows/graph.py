"""Compile a canvas (or an ``app.dag()``) into one graph and submit it to Redis.

A graph is a set of nodes, each one task message, with edges "runs after". Nodes with no unmet
dependency (the roots) are sent at once; the others wait in the graph's hash
(``keys.graph(dag_id)``, fields listed in fastq/broker/lua/dag_complete.lua) and are sent by the
worker that finishes their last dependency, in the round trip after its ack
(fastq/workflows/advance.py). Everything is checked before anything is sent, and the waiting
nodes are written in the same transaction as the roots, ahead of them.
"""
from __future__ import annotations

import inspect
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgpack
import orjson

from fastq import current
from fastq.errors import NotRegistered, WorkflowError
from fastq.message import call_options, new_task_id
from fastq.result import AsyncResult
from fastq.workflows.canvas import (
    CHAIN,
    CHORD,
    GROUP,
    LEAD_KWARGS,
    Signature,
    group,
    maybe_signature,
)
from fastq.workflows.results import GroupResult
from fastq.workflows.watch import settle_outside

if TYPE_CHECKING:
    from fastq.broker.base import SendItem
    from fastq.message import Message

# send options a node may carry (Task.apply_async's); link/link_error/depends_on are edges
SEND_OPTIONS = ("task_id", "queue", "priority", "serializer", "countdown", "eta", "expires",
                "soft_time_limit", "time_limit")
EDGE_OPTIONS = ("link", "link_error", "depends_on", "group_id")
CALL_OPTIONS = ("headers", "ignore_result")  # travel in the message's options


@dataclass(slots=True)
class Node:
    id: str
    sig: Signature | None  # a plain task signature (args merged); None: a task sent outside
    deps: list[str] = field(default_factory=list)  # the nodes it waits for, in order
    anyway: set[str] = field(default_factory=set)  # deps whose failure does not fail it
    feed: Any = None  # what is prepended to its args: None, a node id, or a (nested) list of them
    group_id: str | None = None
    errbacks: list[Signature] = field(default_factory=list)
    parent: str | None = None  # the node before it in a chain (AsyncResult.parent)


@dataclass(slots=True)
class Out:
    """What a compiled part hands to what follows it: the nodes to wait for, and its result."""

    sinks: list[str]
    feed: Any  # a node id, or a list (a group's results)


class Graph:
    """Nodes compiled from a canvas, before submission."""

    def __init__(self, app: Any, dag_id: str | None = None):
        self.app = app
        self.id = dag_id or new_task_id()
        self.nodes: dict[str, Node] = {}
        self.names: dict[str, str] = {}  # app.dag() node names -> node ids
        self.outside: list[str] = []  # ids of tasks sent separately that nodes wait for
        self.errback_ids: dict[int, str] = {}  # id(errback signature) -> its dedup id
        self.callbacks: dict[str, list[str]] = {}  # node -> its link= callbacks (its children)

    # -- compiling ----------------------------------------------------------------------------
    def add(self, sig: Any, after: Out | None = None, anyway: bool = False,
            inherit: dict[str, Any] | None = None, errbacks: list[Signature] = (),
            group_id: str | None = None, lead: tuple = (), lead_kwargs: dict | None = None) -> Out:
        """Compile ``sig`` to run after ``after`` (its result fed in unless immutable)."""
        sig = maybe_signature(sig, self.app)
        opts = dict(sig.options)
        kind = sig.subtask_type
        if kind is not None:  # a composite's own arguments lead those it was sent with
            lead = (*lead, *sig.args)
            more = opts.pop(LEAD_KWARGS, None)
            if more:
                lead_kwargs = {**more, **(lead_kwargs or {})}
        links = [maybe_signature(s, self.app) for s in _as_list(opts.pop("link", None))]
        errbacks = [*errbacks, *(maybe_signature(s, self.app)
                                 for s in _as_list(opts.pop("link_error", None)))]
        outside = [self._outside(dep) for dep in _as_list(opts.pop("depends_on", None))]
        if outside:  # waits for tasks sent separately; their results are not passed on
            after = Out([*(after.sinks if after else ()), *outside], after.feed if after else None)
        inherit = {**(inherit or {}), **{k: v for k, v in opts.items() if k != "task_id"}}
        if kind is None:
            out = self._task(sig, after, anyway, inherit, errbacks, group_id, lead, lead_kwargs)
        elif kind == CHAIN:
            out = after
            for i, part in enumerate(sig.tasks):
                out = self.add(part, out, anyway and i == 0, inherit, errbacks, group_id,
                               lead if i == 0 else (), lead_kwargs if i == 0 else None)
            if out is None or out is after:
                raise WorkflowError("an empty chain has nothing to run")
            if "task_id" in opts:  # Celery: a chain's task_id is its last task's
                self._rename(out.feed, opts["task_id"])
                out = Out([opts["task_id"]], opts["task_id"])
        elif kind == GROUP:
            gid = opts.get("task_id") or new_task_id()
            parts = [self.add(m, after, anyway, inherit, errbacks, gid, lead, lead_kwargs)
                     for m in sig.tasks]
            out = Out([s for p in parts for s in p.sinks], [p.feed for p in parts])
            if not parts:  # an empty group gives [] at once (Celery)
                out = Out(after.sinks if after else [], [])
        elif kind == CHORD:
            head = self.add(sig.header, after, anyway, inherit, errbacks, None, lead, lead_kwargs)
            if sig.body is None:
                raise WorkflowError("a chord needs a body: chord(header, body) or "
                                    "chord(header)(body)")
            body = sig.body.clone(task_id=opts["task_id"]) if "task_id" in opts else sig.body
            out = self.add(body, head, False, inherit, errbacks)
        else:
            raise WorkflowError(f"unknown signature type {kind!r}")
        for callback in links:  # link=: runs with the result once this part succeeded
            called = self.add(callback, out, False, None, [])
            if isinstance(out.feed, str) and isinstance(called.feed, str):
                self.callbacks.setdefault(out.feed, []).append(called.feed)
        return out

    def _task(self, sig: Signature, after: Out | None, anyway: bool, inherit: dict[str, Any],
              errbacks: list[Signature], group_id: str | None, lead: tuple,
              lead_kwargs: dict | None) -> Out:
        node_id = sig.options.get("task_id") or new_task_id()
        if node_id in self.nodes:
            raise WorkflowError(f"task id {node_id} is used twice in one workflow")
        if lead or lead_kwargs:
            sig = sig.clone(lead, lead_kwargs)
        options = {**inherit, **{k: v for k, v in sig.options.items() if k not in EDGE_OPTIONS}}
        unknown = set(options) - set(SEND_OPTIONS) - set(CALL_OPTIONS)
        if unknown:
            raise WorkflowError(f"unsupported options for {sig['task']} in a workflow: "
                                f"{sorted(unknown)}")
        sig = Signature(sig["task"], sig.args, sig.kwargs, options, immutable=sig.immutable,
                        app=self.app)
        feed = None if sig.immutable or after is None else after.feed
        node = Node(node_id, sig, list(dict.fromkeys(after.sinks)) if after else [], set(),
                    feed, group_id, list(errbacks))
        if anyway and after:
            node.anyway = set(node.deps)
        if after and isinstance(after.feed, str):
            node.parent = after.feed
        self.nodes[node_id] = node
        return Out([node_id], node_id)

    def _outside(self, dep: Any) -> str:
        """A task sent outside this graph, as a node that is never sent: the graph waits for the
        task's outcome (fastq/workflows/watch.py records it)."""
        task_id = dep.id if isinstance(dep, AsyncResult) else dep
        if not isinstance(task_id, str) or not task_id:
            raise WorkflowError(f"depends_on takes AsyncResults or task ids, not {dep!r}")
        node = self.nodes.get(task_id)
        if node is not None and node.sig is not None:
            raise WorkflowError(f"depends_on names {task_id}, a task of this same workflow: "
                                "order it with a chain or app.dag(after=...)")
        if node is None:
            self.nodes[task_id] = Node(task_id, None)
            self.outside.append(task_id)
        return task_id

    def _rename(self, old: str, new: str) -> None:
        if new in self.nodes:
            raise WorkflowError(f"task id {new} is used twice in one workflow")
        node = self.nodes.pop(old)
        node.id = new
        self.nodes[new] = node
        for other in self.nodes.values():
            other.deps = [new if d == old else d for d in other.deps]
            other.anyway = {new if d == old else d for d in other.anyway}
            other.feed = _replace(other.feed, old, new)
            if other.parent == old:
                other.parent = new

    # -- checking -----------------------------------------------------------------------------
    def check(self) -> None:
        """Refuse a task name this process cannot know, before anything is sent. (A canvas
        compiles without cycles: each node waits only for nodes compiled before it; app.dag()
        checks its names for one before compiling.)"""
        for node in self.nodes.values():
            if node.sig is None:
                continue
            name = node.sig["task"]
            if name not in self.app.tasks and _looks_mistyped(name, self.app.tasks):
                raise NotRegistered(f"task {name!r} is not registered here, though its module's "
                                    "other tasks are: a typo?")

    # -- submitting ---------------------------------------------------------------------------
    def submit(self) -> None:
        """Write the waiting nodes and send the roots, in one transaction."""
        self.check()
        app = self.app
        conf = app.conf
        kids: dict[str, list[str]] = {}
        for node in self.nodes.values():
            for dep in node.deps:
                kids.setdefault(dep, []).append(("!" if dep in node.anyway else "") + node.id)
        fields: dict[str, bytes] = {}
        roots: list[SendItem] = []
        root_id = next((n.id for n in self.nodes.values() if n.sig is not None), self.id)
        now_ms = int(time.time() * 1000)
        sent = []  # the roots' messages, for the after_send hooks
        waiting = 0  # nodes sent only once their dependencies are met (the metrics' "wait")
        for node in self.nodes.values():
            if node.id in kids:
                fields[f"k:{node.id}"] = " ".join(kids[node.id]).encode()
            if node.sig is None:  # a task sent outside: only its dependents are written
                continue
            msg, queue, level, due_ms, data = self._envelope(node, root_id)
            if node.deps or node.errbacks:  # spec: how to send it; its countdown runs from then
                feed, parents = _indexed(node.feed)
                delay_ms = max(due_ms - now_ms, 0) if due_ms else 0
                fields[f"n:{node.id}"] = msgpack.packb([queue, level, delay_ms, data, feed])
                if parents:
                    fields[f"p:{node.id}"] = orjson.dumps([f"d:{p}" for p in parents])
            if node.deps:
                fields[f"w:{node.id}"] = str(len(node.deps)).encode()
                waiting += 1
            else:
                roots.append((queue, level, data, due_ms))
                sent.append(msg)
            if node.errbacks:
                fields[f"e:{node.id}"] = msgpack.packb(
                    [self._errback(eb, node, root_id) for eb in node.errbacks])
        fields["left"] = str(len(self.nodes)).encode()
        fields["wait"] = str(waiting).encode()
        ttl_ms = int(conf.workflow_ttl * 1000)
        fields["ttl"] = str(ttl_ms).encode()
        app.broker.graph_submit(self.id, fields, roots, ttl_ms, self.outside)
        if app.hooks.after_send:  # the other nodes are reported by whoever sends them
            app.after_send(sent)
        if self.outside:  # those that finished before the watch was announced
            settle_outside(app, [(self.id, task_id) for task_id in self.outside])

    def _envelope(self, node: Node, root_id: str) -> tuple[Message, str, int, int, bytes]:
        sig = node.sig
        task = self.app.task_for(sig["task"])
        opts = dict(sig.options)
        opts.pop("task_id", None)
        extra = call_options(opts.pop("headers", None), opts.pop("ignore_result", None))
        how = task._resolve(**opts, args=sig.args, kwargs=sig.kwargs)
        args = sig.args
        if not node.deps and node.feed is not None:  # a root fed by an empty group: []
            args = (_empty(node.feed), *args)
        msg, data = task._envelope(how, node.id, args, sig.kwargs, extra, dag_id=self.id,
                                   parent_id=node.parent, root_id=root_id,
                                   group_id=node.group_id)
        return msg, how.queue, how.level, how.due_ms, data

    def _errback(self, errback: Signature, node: Node, root_id: str) -> list:
        """An errback ready to send: [dedup id, queue, level, envelope, new-style]. One errback
        given to a whole chain is one id on each of its nodes, so it fires once."""
        eb_id = errback.options.get("task_id") or self.errback_ids.setdefault(id(errback),
                                                                            new_task_id())
        task = self.app.task_for(errback["task"])
        opts = {k: v for k, v in errback.options.items() if k in SEND_OPTIONS and k != "task_id"}
        how = task._resolve(**opts)
        _msg, data = task._envelope(how, eb_id, errback.args, errback.kwargs,
                                    parent_id=node.id, root_id=root_id)
        return [eb_id, how.queue, how.level, data, _new_style(errback, self.app)]

    # -- the handle ---------------------------------------------------------------------------
    def result_of(self, out: Out) -> Any:
        made: dict[str, AsyncResult] = {}

        def handle(feed: Any) -> Any:
            if isinstance(feed, list):
                return GroupResult(None, [handle(f) for f in feed], app=self.app)
            first = None
            child = None
            while feed is not None and feed not in made:  # up the chain, without recursion
                res = made[feed] = AsyncResult(feed, self.app)
                if child is not None:
                    child.parent = res
                first = first or res
                child = res
                feed = self.nodes[feed].parent if feed in self.nodes else None
            if feed is not None and child is not None:
                child.parent = made[feed]
            return first or made[feed]

        result = handle(out.feed)
        for node_id, called in self.callbacks.items():  # Celery's AsyncResult.children
            if node_id in made:
                made[node_id].known_children = [AsyncResult(c, self.app) for c in called]
        return result


def submit(sig: Signature) -> Any:
    """Send a canvas: one graph, unless it is a plain group (its members go out in one batch)."""
    app = sig.app
    if sig.subtask_type == GROUP and _plain_group(sig):
        return _send_group(sig)
    graph = Graph(app)
    out = graph.add(sig)
    graph.submit()
    result = graph.result_of(out)
    if sig.subtask_type == GROUP and isinstance(result, GroupResult):
        result.id = graph.nodes[out.sinks[0]].group_id if out.sinks else new_task_id()
    return result


def _plain_group(sig: group) -> bool:
    """No member has links, parts, waits or a uniqueness key, and the group itself has no link:
    no graph needed."""
    if any(k in sig.options for k in ("link", "link_error", "depends_on")):
        return False
    edges = frozenset((*EDGE_OPTIONS, "unique_key"))  # a graph refuses unique_key clearly
    return all(m["subtask_type"] is None and not (m["options"] and edges & m["options"].keys())
               for m in sig.tasks)


def _send_group(sig: group) -> GroupResult:
    """A group of plain tasks: every member sent in one pipelined round trip, with its group id.
    The send options are resolved once per (task, options) pair, not once per member."""
    app = sig.app
    gid = sig.options.get("task_id") or new_task_id()
    inherit = {k: v for k, v in sig.options.items() if k in SEND_OPTIONS and k != "task_id"}
    inherit_key = tuple(sorted(inherit.items(), key=str))
    lead, lead_kwargs = sig.args, sig.options.get(LEAD_KWARGS) or {}
    keep_messages = bool(app.hooks.after_send)
    results = []
    resolved: dict[tuple, Any] = {}
    with app.batch():
        pending = current.pending_batch()
        for member in sig.tasks:
            name, own = member["task"], member["options"]
            if own:
                opts = {**inherit, **own}
                task_id = opts.pop("task_id", None) or new_task_id()
                extra = call_options(opts.pop("headers", None), opts.pop("ignore_result", None))
                key = (name, tuple(sorted(opts.items(), key=str)))
            else:
                opts, task_id, key, extra = inherit, new_task_id(), (name, inherit_key), None
            found = resolved.get(key) if app.router is None else None  # a router sees the args
            if found is None:
                task = app.task_for(name)
                found = resolved[key] = (task, task._resolve(**opts, args=member["args"],
                                                             kwargs=member["kwargs"]))
            task, how = found
            args, kwargs = member["args"], member["kwargs"]
            if not member["immutable"]:
                if lead:
                    args = (*lead, *args)
                if lead_kwargs:
                    kwargs = {**lead_kwargs, **kwargs}
            msg, data = task._envelope(how, task_id, args, kwargs, extra, group_id=gid)
            pending.items.append((how.queue, how.level, data, how.due_ms))  # as send_message
            if keep_messages:
                pending.messages.append(msg)
            results.append(AsyncResult(task_id, app))
    return GroupResult(gid, results, app=app)


def find_cycle(deps: dict[str, list[str]]) -> list[str] | None:
    """A cycle in "node -> what it waits for" as a path that ends where it starts, or None."""
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    for start in deps:
        if state.get(start):
            continue
        path = [start]
        stack = [iter(deps.get(start, ()))]
        state[start] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
                continue
            if state.get(nxt) == 1:
                return [*path[path.index(nxt):], nxt][::-1]
            if not state.get(nxt):
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(deps.get(nxt, ())))
    return None


def _indexed(feed: Any) -> tuple[Any, list[str]]:
    """The feed with node ids replaced by their index in the returned parents list."""
    parents: list[str] = []

    def walk(f: Any) -> Any:
        if f is None:
            return None
        if isinstance(f, list):
            return [walk(x) for x in f]
        parents.append(f)
        return len(parents) - 1

    return walk(feed), parents


def _empty(feed: Any) -> Any:
    """The value of a feed with no node in it (nested empty groups): lists of lists."""
    return [_empty(f) for f in feed] if isinstance(feed, list) else None


def _replace(feed: Any, old: str, new: str) -> Any:
    if isinstance(feed, list):
        return [_replace(f, old, new) for f in feed]
    return new if feed == old else feed


def _as_list(value: Any) -> list:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _new_style(errback: Signature, app: Any) -> bool:
    """Celery calls an errback ``(request, exc, traceback)`` when its function takes more than
    one argument, else ``(task_id)``; a task not registered here gets the old form."""
    task = app.tasks.get(errback["task"])
    if task is None or errback.immutable:
        return False
    try:
        params = [p for p in inspect.signature(task.fn).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)]
    except (TypeError, ValueError):
        return False
    if task.bind:
        params = params[1:]
    return len(params) - len(errback.args) > 1 or any(p.kind == p.VAR_POSITIONAL for p in params)


def _looks_mistyped(name: str, tasks: dict[str, Any]) -> bool:
    module = name.rpartition(".")[0]
    return bool(module) and any(t.rpartition(".")[0] == module for t in tasks)


__all__ = ["Graph", "Node", "Out", "find_cycle", "submit"]
