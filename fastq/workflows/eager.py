"""Running a canvas here and now (``sig.apply()``, and every send under Celery's
``task_always_eager``): each task through :meth:`fastq.Task.apply`, with Celery's argument passing,
no broker involved. A chain stops at its first failure and returns that step's result."""
from __future__ import annotations

from typing import Any

from fastq import states
from fastq.message import new_task_id
from fastq.workflows.canvas import CHAIN, CHORD, GROUP, LEAD_KWARGS, Signature, maybe_signature
from fastq.workflows.results import GroupResult


def run(sig: Signature) -> Any:
    """The result handle of ``sig`` run here: an EagerResult (the last of a chain, a chord's
    body), or a GroupResult of them."""
    kind = sig.subtask_type
    lead_args = tuple(sig.args)
    lead_kwargs = sig.options.get(LEAD_KWARGS) or {}
    if kind == CHAIN:
        last = None
        for i, step in enumerate(sig.tasks):
            step = maybe_signature(step, sig.app)
            if i == 0:
                step = step.clone(lead_args, lead_kwargs)
            else:
                step = step.clone((last.get(),))  # the previous result, unless immutable
            res = run(step)
            res.parent, last = last, res
            if _failed(res):
                break
        return last
    if kind == GROUP:
        members = [run(maybe_signature(m, sig.app).clone(lead_args, lead_kwargs))
                   for m in sig.tasks]
        return GroupResult(sig.options.get("task_id") or new_task_id(), members, app=sig.app)
    if kind == CHORD:
        header = run(sig.header.clone(lead_args, lead_kwargs))
        body = sig.body
        if body is None:
            return header
        if not header.successful():
            failed = next(r for r in _leaves(header) if _failed(r))
            return failed
        res = run(maybe_signature(body, sig.app).clone((header.get(),)))
        res.parent = header
        return res
    task = sig.app.get_task(sig["task"])
    options = sig.options
    res = task.apply(sig.args, sig.kwargs, task_id=options.get("task_id"))
    if res.state == states.SUCCESS:
        for callback in options.get("link") or ():
            maybe_signature(callback, sig.app).clone((res.get(),)).apply_async()
    else:
        for errback in options.get("link_error") or ():
            maybe_signature(errback, sig.app).clone((res.id,)).apply_async()
    return res


def _failed(res: Any) -> bool:
    return not res.successful()


def _leaves(res: Any) -> list:
    out = []
    for r in res.results:
        out.extend(_leaves(r) if isinstance(r, GroupResult) else [r])
    return out
