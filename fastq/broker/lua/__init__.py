"""Lua scripts, one file per atomic verb (promote.lua, requeue.lua, ...)."""
from __future__ import annotations

from functools import cache
from importlib import resources


@cache
def load(name: str) -> str:
    """The source of ``<name>.lua`` in this package."""
    return resources.files(__package__).joinpath(f"{name}.lua").read_text()
