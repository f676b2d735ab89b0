"""An app with a recording middleware: every hook appends a JSON line to $FASTQ_HOOK_LOG."""
from __future__ import annotations

import json
import os

from fastq import App, Middleware, SkipMessage


def _record(hook: str, **fields) -> None:
    path = os.environ.get("FASTQ_HOOK_LOG")
    if path:
        line = json.dumps({"hook": hook, "pid": os.getpid(), **fields}) + "\n"
        with open(path, "a") as f:  # one write of one line: appends from processes do not mix
            f.write(line)


def _exc(exc) -> str | None:
    return None if exc is None else type(exc).__name__


class Recorder(Middleware):
    def before_send(self, app, message):
        message.options["seen_by"] = "recorder"  # a header that travels with the message
        _record("before_send", id=message.id, task=message.task)

    def after_send(self, app, message):
        _record("after_send", id=message.id)

    def worker_boot(self, worker):
        _record("worker_boot", name=worker.name)

    def child_init(self, child):
        _record("child_init", consumer=child.consumer)

    def worker_shutdown(self, worker):
        _record("worker_shutdown", name=worker.name)

    def before_execute(self, task, message):
        _record("before_execute", id=message.id, task=task.name,
                header=message.options.get("seen_by"))
        if task.name.endswith(".skipped"):
            raise SkipMessage("skipped by the recorder")

    def after_execute(self, task, message, result=None, exc=None):
        _record("after_execute", id=message.id, result=result, exc=_exc(exc))

    def on_retry(self, task, message, exc, countdown):
        _record("on_retry", id=message.id, exc=_exc(exc), countdown=countdown)

    def on_dead_letter(self, message, reason):
        _record("on_dead_letter", id=message.id if message else None, reason=reason)

    def after_flush(self, child, finish):
        _record("after_flush", acks=sum(len(ids) for ids in finish.acks.values()))

    def child_idle(self, child):
        _record("child_idle")


app = App("hooked", middleware=[Recorder()])


@app.task
def double(x):
    return 2 * x


@app.task
def boom():
    raise ValueError("boom")


@app.task(retry_for=(KeyError,), max_retries=1, retry_schedule=[0.05])
def flaky():
    raise KeyError("always")


@app.task
def skipped():
    _record("ran", task="skipped")  # must never happen
