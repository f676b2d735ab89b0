"""The tasks of ``fastq demo``: a small realistic mix (arithmetic, hashing, async I/O, failures)."""
from __future__ import annotations

import asyncio
import hashlib

from fastq import App

QUEUE = "fastq-demo"
app = App("fastq-demo", default_queue=QUEUE, result_expires=900)


class FlakyError(Exception):
    """Raised on purpose by ``flaky`` so the demo shows failures being recorded."""


@app.task
def add(x: int, y: int) -> int:
    return x + y


@app.task
def checksum(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


@app.task
async def lookup(key: int) -> dict:
    await asyncio.sleep(0)  # stands in for a network call
    return {"key": key, "found": key % 3 == 0}


@app.task
def flaky(n: int) -> int:
    raise FlakyError(f"task {n} failed on purpose")
