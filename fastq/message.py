"""The message envelope as Python sees it: :class:`Message` and the codec ids.

Defined in ``fastq._core.message`` (the hot core builds and parses it and may depend on nothing
above it); this is its public name.
"""
import os

from fastq._core.message import (
    CODEC_BY_ID,
    CODEC_JSON,
    CODEC_MSGPACK,
    CODEC_NAMES,
    CODEC_PICKLE,
    Message,
)

IGNORE_RESULT = "fastq.ignore_result"  # a message option: this call's result is not stored


def call_options(headers: dict | None, ignore_result: bool | None) -> dict | None:
    """The message options of one call's ``headers`` and ``ignore_result`` (None: none)."""
    options = dict(headers) if headers else None
    if ignore_result:
        options = {**(options or {}), IGNORE_RESULT: True}
    return options


def new_task_id() -> str:
    """A random (version 4) UUID string, as ``str(uuid.uuid4())`` gives, in half the time."""
    h = os.urandom(16).hex()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) & 3]}{h[17:20]}-{h[20:]}"


__all__ = ["CODEC_BY_ID", "CODEC_JSON", "CODEC_MSGPACK", "CODEC_NAMES", "CODEC_PICKLE",
           "IGNORE_RESULT", "Message", "call_options", "new_task_id"]
