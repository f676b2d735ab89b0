"""The task bodies of bench/workflows.py, registered under the same names by
bench_flow_fastq_app.py and bench_flow_celery_app.py, so both systems run identical code."""
from __future__ import annotations

import time


def stamp(*_args):
    """A no-op header task: returns when it ended (epoch s)."""
    return time.time()


def lag(stamps):
    """A chord body: seconds from the last header task's end to this task's start."""
    return time.time() - max(stamps)


def step(x=0):
    """One link of a chain."""
    return x + 1


def noop(*_args):
    """A group member (the group bench only sends)."""


def register(task):
    """Register the bodies with an app's ``task`` decorator (Celery's or fastq's): the four
    tasks by their shared names."""
    return (task(name="flow.stamp")(stamp), task(name="flow.lag")(lag),
            task(name="flow.step")(step), task(name="flow.noop", ignore_result=True)(noop))
