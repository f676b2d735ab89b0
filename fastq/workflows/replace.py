"""``self.replace(sig)``: a running task hands its place, its id and its place in a workflow, to
another signature or canvas (Celery's ``Task.replace``).

- A **task signature** is sent at once with the running task's id and its workflow fields (graph,
  group, parent, root): when it finishes, its outcome is the task's outcome, and a graph the task
  is a node of advances from it as if the task itself had finished.
- A **canvas** (chain, chord; a group becomes a chord whose body gives the list of its results,
  as in Celery) is submitted with its final task under the running task's id, so that id's result
  is the canvas's result. When the task is a node of a graph, that graph first announces that it
  waits on the id (``depends_on``'s mechanism, fastq/workflows/watch.py), and the canvas's end
  settles the node.

The running task then ends as ``Ignore`` does (acknowledged, no outcome written): raising
:class:`fastq.errors.Replaced` from ``Task.replace`` does that.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastq.message import call_options
from fastq.workflows.canvas import CHAIN, CHORD, GROUP, TASK, Signature, chord, maybe_signature
from fastq.workflows.graph import SEND_OPTIONS

if TYPE_CHECKING:
    from fastq.message import Message

ACCUMULATE = "fastq.accumulate"  # the chord body a group replacement gets (registered by App)
EDGES = ("link", "link_error", "depends_on")


def replace(app: Any, msg: Message, sig: Any) -> None:
    """Send ``sig`` in the place of the running task ``msg``."""
    sig = maybe_signature(sig, app).clone()
    if sig.subtask_type is TASK and not any(sig.options.get(k) for k in EDGES):
        _send_in_place(app, msg, sig)
        return
    if sig.subtask_type == GROUP:
        sig = chord(sig, app.task_for(ACCUMULATE).s(), app=app)
    final(sig).options["task_id"] = msg.id
    if msg.dag_id:  # the graph the task is a node of waits on the canvas's end
        app.broker.watch(msg.dag_id, [msg.id], int(app.settings.workflow_ttl * 1000))
    sig.apply_async()


def final(sig: Signature) -> Signature:
    """The task signature whose result is the canvas's result."""
    kind = sig.subtask_type
    if kind == CHAIN:
        return final(sig.tasks[-1])
    if kind == CHORD:
        return final(sig.body)
    if kind == GROUP:
        raise ValueError("a group has no single final task")
    return sig


def _send_in_place(app: Any, msg: Message, sig: Signature) -> None:
    task = app.task_for(sig["task"])
    opts = {k: sig.options[k] for k in SEND_OPTIONS
            if k != "task_id" and sig.options.get(k) is not None}
    how = task._resolve(**opts, args=sig.args, kwargs=sig.kwargs)
    fields = {name: getattr(msg, name) for name in ("dag_id", "group_id") if getattr(msg, name)}
    fields.update(parent_id=msg.parent_id, root_id=msg.root_id)  # its own, not the task's
    extra = call_options(sig.options.get("headers"), sig.options.get("ignore_result"))
    sent, data = task._envelope(how, msg.id, sig.args, sig.kwargs, extra, **fields)
    hooks = app.hooks
    if app.send_message(how.queue, how.level, data, how.due_ms,
                        sent if hooks.after_send else None) and hooks.after_send:
        app.after_send([sent])
