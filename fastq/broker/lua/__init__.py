"""Lua scripts, one file per atomic verb (promote.lua, requeue.lua, ...)."""
from __future__ import annotations

from functools import cache
from importlib import resources


@cache
def load(name: str) -> str:
    """The source of ``<name>.lua`` in this package, without its comment lines (a verb called
    inside MULTI is sent whole with every call, see fastq/broker/redis.py ``_queue_script``)."""
    text = resources.files(__package__).joinpath(f"{name}.lua").read_text()
    return "\n".join(line for line in text.splitlines()
                     if line.strip() and not line.lstrip().startswith("--"))
