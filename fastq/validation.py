"""Typed tasks: arguments checked and converted by pydantic from the function's annotations.

``@app.task(typed=True)`` checks a call's arguments when it is *sent*, so a bad argument fails in
the producer with a clear error instead of in a worker minutes later, and the worker converts them
again to the annotated types (a dict becomes the annotated model) before the task runs; a returned
pydantic model is stored as its ``model_dump(mode="json")``. ``typed="run"`` converts in the worker
only (Celery 5.5's ``pydantic=True``). Parameters without an annotation are passed as they are.
"""
from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, get_type_hints

from pydantic import BaseModel, TypeAdapter, ValidationError


class ArgumentError(TypeError):
    """A typed task was called with arguments that do not fit its annotations (nothing sent)."""


class Arguments:
    """The annotated parameters of ``fn`` (less the task itself when ``bound``) and their
    pydantic adapters."""

    def __init__(self, fn: Callable, name: str, bound: bool):
        self.name = name
        self.signature = inspect.signature(fn)
        params = list(self.signature.parameters.values())
        if bound and params:
            params = params[1:]
            self.signature = self.signature.replace(parameters=params)
        try:
            hints = get_type_hints(fn)
        except Exception:  # noqa: BLE001 - unresolvable annotations: use them as written
            hints = dict(getattr(fn, "__annotations__", {}))
        self.adapters: dict[str, TypeAdapter] = {}
        self.kinds: dict[str, Any] = {}
        for p in params:
            if p.name in hints:
                self.adapters[p.name] = TypeAdapter(hints[p.name])
                self.kinds[p.name] = p.kind

    def convert(self, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        """The arguments as the annotated types; ArgumentError names every one that does not fit."""
        try:
            bound = self.signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise ArgumentError(f"{self.name}: {exc}") from None
        problems = []
        for name, adapter in self.adapters.items():
            if name not in bound.arguments:
                continue
            value = bound.arguments[name]
            try:
                if self.kinds[name] is inspect.Parameter.VAR_POSITIONAL:
                    bound.arguments[name] = tuple(adapter.validate_python(v) for v in value)
                elif self.kinds[name] is inspect.Parameter.VAR_KEYWORD:
                    bound.arguments[name] = {k: adapter.validate_python(v)
                                             for k, v in value.items()}
                else:
                    bound.arguments[name] = adapter.validate_python(value)
            except ValidationError as exc:
                problems.append(f"{name}: " + "; ".join(
                    f"{'.'.join(map(str, e['loc'])) or 'value'} {e['msg']}" for e in exc.errors()))
        if problems:
            raise ArgumentError(f"{self.name}: arguments do not fit the annotations: "
                                + " | ".join(problems))
        return tuple(bound.args), dict(bound.kwargs)


def plain(value: Any) -> Any:
    """What a codec can carry: pydantic models (also inside lists, tuples and dicts) dumped."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, list | tuple):
        return type(value)(plain(v) for v in value) if isinstance(value, tuple) else \
            [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value


def converting(arguments: Arguments, invoke: Callable) -> Callable:
    """``invoke`` with its arguments converted first and a returned model dumped."""
    if inspect.iscoroutinefunction(invoke) or inspect.iscoroutinefunction(
            getattr(invoke, "func", None)):
        @functools.wraps(invoke)
        async def run_async(*args: Any, **kwargs: Any) -> Any:
            args, kwargs = arguments.convert(args, kwargs)
            return plain(await invoke(*args, **kwargs))

        return run_async

    @functools.wraps(invoke)
    def run(*args: Any, **kwargs: Any) -> Any:
        args, kwargs = arguments.convert(args, kwargs)
        return plain(invoke(*args, **kwargs))

    return run
