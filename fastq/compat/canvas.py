"""``celery.canvas``: signatures and the chain, group and chord built from them."""
from typing import Any

from fastq.workflows.canvas import (
    Signature,
    chain,
    chord,
    chunks,
    group,
    maybe_signature,
    signature,
)

subtask = signature


def xmap(task: Any, it: Any) -> Signature:
    """Celery's ``xmap``: one task that runs ``task(item)`` for every item, in order."""
    name = getattr(task, "name", task)
    return Signature("fastq.starmap", (name, [(item,) for item in it]), app=getattr(task, "app", None))


def xstarmap(task: Any, it: Any) -> Signature:
    """Celery's ``xstarmap``: one task that runs ``task(*args)`` for every args tuple."""
    name = getattr(task, "name", task)
    return Signature("fastq.starmap", (name, [tuple(a) for a in it]), app=getattr(task, "app", None))


__all__ = ["Signature", "chain", "chord", "chunks", "group", "maybe_signature", "signature",
           "subtask", "xmap", "xstarmap"]
