"""The message envelope as Python sees it: :class:`Message` and the codec ids.

Defined in ``fastq._core.message`` (the hot core builds and parses it and may depend on nothing
above it); this is its public name.
"""
from fastq._core.message import (
    CODEC_BY_ID,
    CODEC_JSON,
    CODEC_MSGPACK,
    CODEC_NAMES,
    CODEC_PICKLE,
    Message,
)

__all__ = ["CODEC_BY_ID", "CODEC_JSON", "CODEC_MSGPACK", "CODEC_NAMES", "CODEC_PICKLE", "Message"]
