"""Process-wide context that app, result, schedules and beat share: the current App, and the batch
that collects messages instead of sending them.

A leaf module: it imports nothing of fastq, so every layer may use it without an import circle.
``fastq.app`` registers how to make a default App (:func:`set_default_factory`), so that
:func:`app` can give one to a result handle created before any App exists.
"""
from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

_app: Any = None
_default_factory: Callable[[], Any] | None = None


@dataclass(slots=True)
class Batch:
    """Messages collected instead of sent: ``items`` as the broker's ``send_many`` takes them,
    and the Message objects whose ``after_send`` hooks run once the items are written."""

    items: list[tuple[str, int, bytes, int]] = field(default_factory=list)
    messages: list[Any] = field(default_factory=list)


_batch: contextvars.ContextVar[Batch | None] = contextvars.ContextVar("fastq_batch", default=None)


def set_app(app: Any) -> None:
    """Make ``app`` the current App (the most recently created one)."""
    global _app
    _app = app


def peek_app() -> Any:
    """The current App, or None when none was created yet (never makes one)."""
    return _app


def set_default_factory(factory: Callable[[], Any]) -> None:
    global _default_factory
    _default_factory = factory


def app() -> Any:
    """The current App; a default one (made and made current) if none exists."""
    if _app is None:
        if _default_factory is None:
            raise RuntimeError("no fastq App exists yet: create one with fastq.App(...)")
        set_app(_default_factory())
    return _app


def pending_batch() -> Batch | None:
    """The open batch, or None outside one."""
    return _batch.get()


@contextmanager
def capture() -> Iterator[Batch]:
    """Collect every message sent inside the block into the yielded Batch instead of sending it
    (the App's batch, and beat's fire script, which sends them itself)."""
    pending = Batch()
    token = _batch.set(pending)
    try:
        yield pending
    finally:
        _batch.reset(token)
