"""Packing a round's task runs for fastq's event stream (fastq/events/records.py): the pure twin
of ``runpack.pyx``. ``pack_runs(runs)`` is exactly ``msgpack.packb(runs, default=repr)``; the
Cython twin writes the same bytes several times faster for the values a run holds (bytes, str,
float, bool, None), handing anything else to msgpack."""
from __future__ import annotations

from typing import Any

import msgpack


def pack_runs(runs: list[Any]) -> bytes:
    return msgpack.packb(runs, default=repr)
