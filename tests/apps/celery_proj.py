"""A project written as for Celery, on fastq.compat: signals, a custom base Task, routes, progress,
Reject and Ignore. Signal handlers append JSON lines to $FASTQ_HOOK_LOG (see tests/test_compat.py)."""
from __future__ import annotations

import json
import os
import time

import redis

from fastq.compat import Celery, Task
from fastq.compat.contrib.abortable import AbortableTask
from fastq.compat.exceptions import Ignore, Reject
from fastq.compat.signals import (
    after_setup_logger,
    after_task_publish,
    before_task_publish,
    task_failure,
    task_postrun,
    task_prerun,
    task_retry,
    task_revoked,
    task_success,
    task_unknown,
    worker_init,
    worker_process_init,
    worker_process_shutdown,
    worker_ready,
    worker_shutdown,
)

app = Celery("celery_proj")
app.conf.update(
    task_default_queue="default",
    task_routes={"*.side_*": {"queue": "side"}},
    task_annotations={"tests.apps.celery_proj.annotated": {"max_retries": 1,
                                                           "default_retry_delay": 0.05}},
)


def record(kind: str, **fields) -> None:
    path = os.environ.get("FASTQ_HOOK_LOG")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps({"kind": kind, "pid": os.getpid(), **fields}, default=repr) + "\n")


# -- signals, connected as Celery's docs show --------------------------------------------------
@before_task_publish.connect
def on_before_publish(sender=None, headers=None, body=None, **kwargs):
    record("before_task_publish", sender=sender, id=headers["id"], args=list(body[0]))


@after_task_publish.connect
def on_after_publish(sender=None, headers=None, **kwargs):
    record("after_task_publish", sender=sender, id=headers["id"])


@task_prerun.connect
def on_prerun(sender=None, task_id=None, task=None, args=None, kwargs=None, **extra):
    record("task_prerun", sender=sender.name, id=task_id, task=task.name, args=list(args),
           kwargs=kwargs)


@task_postrun.connect
def on_postrun(sender=None, task_id=None, retval=None, state=None, **extra):
    record("task_postrun", sender=sender.name, id=task_id, retval=retval, state=state)


@task_success.connect(sender="tests.apps.celery_proj.add")  # a sender filter by task name
def on_success(sender=None, result=None, **extra):
    record("task_success", sender=sender.name, result=result)


@task_failure.connect
def on_failure(sender=None, task_id=None, exception=None, einfo=None, **extra):
    record("task_failure", sender=sender.name, id=task_id, exc=type(exception).__name__,
           einfo="Traceback" in str(einfo))


@task_retry.connect
def on_retry(sender=None, request=None, reason=None, **extra):
    record("task_retry", sender=sender.name, id=request.id, reason=type(reason).__name__)


@task_revoked.connect
def on_revoked(sender=None, request=None, terminated=None, expired=None, **extra):
    record("task_revoked", sender=sender.name, id=request.id, terminated=terminated,
           expired=expired)


@task_unknown.connect
def on_unknown(sender=None, name=None, id=None, **extra):  # noqa: A002 - Celery's argument
    record("task_unknown", name=name, id=id)


@worker_init.connect
def on_worker_init(sender=None, **kwargs):
    record("worker_init")


@worker_ready.connect
def on_worker_ready(sender=None, **kwargs):
    record("worker_ready")


@worker_process_init.connect
def on_process_init(**kwargs):
    record("worker_process_init")


@worker_process_shutdown.connect
def on_process_shutdown(pid=None, exitcode=None, **kwargs):
    record("worker_process_shutdown", exitcode=exitcode)


@worker_shutdown.connect
def on_worker_shutdown(sender=None, **kwargs):
    record("worker_shutdown")


@after_setup_logger.connect
def on_after_setup_logger(logger=None, loglevel=None, logfile=None, **kwargs):
    record("after_setup_logger", logger=logger.name, loglevel=loglevel)


# -- a custom base class -------------------------------------------------------------------
class Audited(Task):
    max_retries = 2  # class attributes are defaults, as in Celery

    def before_start(self, task_id, args, kwargs):
        record("before_start", id=task_id, args=list(args))

    def on_success(self, retval, task_id, args, kwargs):
        record("on_success", id=task_id, retval=retval)

    def on_failure(self, exc, task_id, args, kwargs, einfo):
        record("on_failure", id=task_id, exc=type(exc).__name__, tb="Traceback" in str(einfo))

    def after_return(self, status, retval, task_id, args, kwargs, einfo):
        record("after_return", id=task_id, status=status)


# -- tasks -----------------------------------------------------------------------------------
@app.task
def add(x, y):
    return x + y


@app.task
def fail(message):
    raise ValueError(message)


@app.task(bind=True, base=Audited)
def audited(self, x):
    if x < 0:
        raise KeyError(x)
    return x * 10


@app.task(bind=True)
def annotated(self):
    """Retried once (task_annotations' max_retries=1), then fails."""
    raise self.retry(exc=LookupError("again"))


@app.task(bind=True)
def whoami(self, *args, **kwargs):
    req = self.request
    return {"id": req.id, "args": list(req.args), "kwargs": req.kwargs, "retries": req.retries,
            "hostname": req.hostname, "queue": req.delivery_info["routing_key"],
            "called_directly": req.called_directly, "is_eager": req.is_eager,
            "root_id": req.root_id, "parent_id": req.parent_id, "task": req.task}


@app.task
def side_job(x):  # routed to the "side" queue by the glob in task_routes
    return f"side:{x}"


@app.task(bind=True)
def progress(self, steps, pause):
    for i in range(steps):
        self.update_state(state="PROGRESS", meta={"current": i + 1, "total": steps})
        time.sleep(pause)
    return "done"


@app.task(bind=True)
def refuse(self, requeue):
    deliveries = redis.Redis.from_url(os.environ["FASTQ_BROKER_URL"]).incr(
        f"test:refuse:{self.request.id}")
    if requeue and deliveries == 1:
        raise Reject("first delivery refused", requeue=True)  # runs again
    if not requeue:
        raise Reject("never wanted", requeue=False)
    return "second delivery ran"


@app.task(bind=True)
def ignored(self):
    self.update_state(state="PROGRESS", meta={"left": "as is"})
    raise Ignore()


@app.task
def pid():
    return os.getpid()


@app.task
def slow(seconds):
    time.sleep(seconds)
    return seconds


@app.task(bind=True, base=AbortableTask)
def patient(self, limit=20.0):
    """Waits until aborted (or ``limit`` seconds), looking every 20 ms."""
    deadline = time.time() + limit
    while time.time() < deadline:
        if self.is_aborted():
            return "aborted"
        time.sleep(0.02)
    return "finished"
