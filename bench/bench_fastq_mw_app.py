"""bench_fastq_app with one no-op middleware installed, overriding every per-task and per-round
hook (the worst case of "one middleware that does nothing"): bench/middleware_cost.py."""
from __future__ import annotations

from bench_fastq_app import app, echo, noop, noop_stored  # noqa: F401 - the tasks the bench sends

from fastq import Middleware


class NoOp(Middleware):
    def before_send(self, app, message): pass

    def after_send(self, app, message): pass

    def before_execute(self, task, message): pass

    def after_execute(self, task, message, result=None, exc=None): pass

    def after_flush(self, child, finish): pass


app.add_middleware(NoOp())
