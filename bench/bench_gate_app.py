"""The tasks bench/test_gates.py gates on (queue ``gate``; broker set by bench/conftest.py)."""
from __future__ import annotations

import os
import time

from fastq import App

app = App("gate", default_queue="gate")
# a deliberate slowdown of every no-op run, for the gates' own test (tests/test_throughput_gates.py)
SLOWDOWN_S = float(os.environ.get("FASTQ_GATE_SLOWDOWN_MS", "0")) / 1000


@app.task(name="gate.noop", ignore_result=True)
def noop(*args):
    if SLOWDOWN_S:
        time.sleep(SLOWDOWN_S)


@app.task(name="gate.echo")
def echo(value=None):
    return value


@app.task(name="gate.count")
def count(values):
    return len(values)
