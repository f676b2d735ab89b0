"""The hot core: the Cython modules when built, else (or with ``FASTQ_PURE=1``) their pure twins.

``IMPLEMENTATION`` says which one this process uses.
"""
from __future__ import annotations

import os

if os.environ.get("FASTQ_PURE"):
    from fastq._core import codec_py as _codec
    from fastq._core import runlog_py as _runlog
    from fastq._core import select_py as _select
    from fastq._core import tally_py as _tally

    IMPLEMENTATION = "python"
else:
    try:
        from fastq._core import codec as _codec  # type: ignore[attr-defined]
        from fastq._core import runlog as _runlog  # type: ignore[attr-defined]
        from fastq._core import select as _select  # type: ignore[attr-defined]
        from fastq._core import tally as _tally  # type: ignore[attr-defined]

        IMPLEMENTATION = "cython"
    except ImportError:
        from fastq._core import codec_py as _codec
        from fastq._core import runlog_py as _runlog
        from fastq._core import select_py as _select
        from fastq._core import tally_py as _tally

        IMPLEMENTATION = "python"

encode_message = _codec.encode_message
decode_message = _codec.decode_message
pack_body = _codec.pack_body
unpack_body = _codec.unpack_body
pack_value = _codec.pack_value
unpack_value = _codec.unpack_value
plan_levels = _select.plan_levels
RunTally = _tally.RunTally
RunLog = _runlog.RunLog

__all__ = ["IMPLEMENTATION", "encode_message", "decode_message", "pack_body", "unpack_body",
           "pack_value", "unpack_value", "plan_levels", "RunTally",
           "RunLog"]
