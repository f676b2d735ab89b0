"""The tasks bench/test_gates.py gates on (queue ``gate``; broker set by bench/conftest.py)."""
from __future__ import annotations

from fastq import App

app = App("gate", default_queue="gate")


@app.task(name="gate.noop", ignore_result=True)
def noop(*args):
    return None


@app.task(name="gate.echo")
def echo(value=None):
    return value


@app.task(name="gate.count")
def count(values):
    return len(values)
