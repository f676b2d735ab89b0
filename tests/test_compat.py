"""fastq.compat: Celery's names, app.conf, tasks, signals and eager mode (real Redis, real workers)."""
from __future__ import annotations

import json
import os
import signal
import sys
import time
import types
import uuid
import warnings

import pytest

from fastq import keys
from fastq.compat import Celery, CompatWarning, shared_task, states
from fastq.compat.exceptions import MaxRetriesExceededError, Retry
from fastq.result import EagerResult
from tests.apps import celery_proj as proj
from tests.conftest import app_fixture, wait_for, worker_fixture

app = app_fixture("tests.apps.celery_proj")
proj_worker = worker_fixture("tests.apps.celery_proj", 2, "app")


@pytest.fixture
def hook_log(tmp_path, monkeypatch):
    path = tmp_path / "signals.jsonl"
    path.touch()
    monkeypatch.setenv("FASTQ_HOOK_LOG", str(path))

    def read(kind: str | None = None) -> list[dict]:
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        return [row for row in rows if kind is None or row["kind"] == kind]

    return read


def _fresh(**settings) -> Celery:
    return Celery("fresh", broker=f"memory://{uuid.uuid4().hex}", **settings)


# -- names ---------------------------------------------------------------------------------
def test_every_name_of_celerys_surface_imports():
    import fastq.compat.canvas
    import fastq.compat.result  # noqa: F401
    from fastq.compat import (  # noqa: F401
        AsyncResult,
        Celery,
        EagerResult,
        GroupResult,
        Signature,
        Task,
        chain,
        chord,
        chunks,
        crontab,
        current_app,
        current_task,
        group,
        schedule,
        shared_task,
        signature,
        solar,
        xmap,
        xstarmap,
    )
    from fastq.compat.exceptions import (  # noqa: F401
        Ignore,
        MaxRetriesExceededError,
        NotRegistered,
        Reject,
        Retry,
        SoftTimeLimitExceeded,
        TaskRevokedError,
        TimeLimitExceeded,
        TimeoutError,
        WorkerLostError,
    )
    from fastq.compat.signals import (  # noqa: F401
        after_setup_logger,
        after_task_publish,
        beat_init,
        before_task_publish,
        setup_logging,
        task_failure,
        task_postrun,
        task_prerun,
        task_received,
        task_rejected,
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
    from fastq.compat.states import PENDING, READY_STATES, RECEIVED  # noqa: F401

    assert states.SUCCESS in states.READY_STATES and states.PENDING not in states.READY_STATES
    with pytest.raises(NotImplementedError, match="solar"):
        solar("sunset", 0, 0)


# -- app.conf --------------------------------------------------------------------------------
def test_conf_is_a_mapping_with_celerys_names():
    app = _fresh()
    assert app.conf.task_serializer == "json" and app.conf.task_default_queue == "celery"
    app.conf.update({"task_default_queue": "q1"}, result_expires=60)
    app.conf["worker_prefetch_multiplier"] = 4
    app.conf.CELERYD_TASK_TIME_LIMIT = 30  # an old upper-case name
    assert app.settings.default_queue == "q1" and app.settings.result_expires == 60
    assert app.settings.prefetch == 4 and app.conf["task_time_limit"] == 30
    assert app.conf.get("task_always_eager") is False and app.conf.get("nope", 7) == 7
    assert app.conf.setdefault("task_track_started", True) is False  # Celery's default stays
    assert "task_routes" in app.conf and "broker_url" in dict(app.conf)
    with pytest.raises(AttributeError):
        app.conf.not_a_setting_at_all  # noqa: B018


def test_every_supported_key_starts_without_a_warning_and_takes_effect(monkeypatch):
    from datetime import timedelta

    from fastq.compat.schedules import crontab

    every = dict(
        broker_url="memory://every", result_backend="redis://localhost:6379/1",
        task_serializer="json", result_serializer="json", accept_content=["json", "msgpack"],
        result_expires=timedelta(hours=2), task_acks_late=True, task_default_queue="work",
        task_default_priority=6, task_routes={"a.*": {"queue": "a"}},
        task_annotations={"*": {"rate_limit": "10/s"}}, task_always_eager=False,
        task_eager_propagates=True, task_time_limit=60, task_soft_time_limit=50,
        task_ignore_result=False, task_track_started=True, worker_prefetch_multiplier=1,
        worker_max_tasks_per_child=100, worker_max_memory_per_child=200_000,
        worker_concurrency=3, beat_schedule={"tick": {"task": "a.b", "schedule": crontab()}},
        timezone="Europe/Berlin", enable_utc=True,
        broker_transport_options={"visibility_timeout": 7200, "queue_order_strategy": "priority",
                                  "priority_steps": list(range(10))},
        broker_connection_retry_on_startup=True, include=["tests.apps.basic"], imports=[])
    with warnings.catch_warnings():
        warnings.simplefilter("error", CompatWarning)
        app = Celery("every", **every)
    s = app.settings
    assert (s.result_backend, s.serializer, s.accept_content) == (
        "redis://localhost:6379/1", "json", ["json", "msgpack"])
    assert (s.result_expires, s.default_queue, s.default_priority) == (7200, "work", 3)
    assert (s.prefetch, s.max_tasks_per_child, s.max_memory_per_child, s.concurrency) == (
        1, 100, 200_000, 3)
    assert (s.lease_ms, s.timezone, s.include) == (7_200_000, "Europe/Berlin", ["tests.apps.basic"])

    @app.task(name="a.job")
    def job():
        return 1

    assert job.hard_limit_ms == 60_000 and job.soft_limit_ms == 50_000 and job.track_started
    assert job.rate_limit == "10/s" and job.rate == 10.0  # from the '*' annotation
    assert job._resolve(args=()).queue == "a"  # from task_routes


def test_unsupported_keys_are_named_once_in_one_warning():
    with pytest.warns(CompatWarning) as caught:
        _fresh(worker_direct=True, task_acks_late=False, result_backend="db+sqlite:///r.db",
               task_queus={"x": 1})
    assert len(caught) == 1
    text = str(caught[0].message)
    for part in ("worker_direct: not supported", "task_acks_late=False: fastq always acknowledges",
                 "result_backend: fastq keeps results in Redis", "task_queus: not a Celery setting"):
        assert part in text
    with warnings.catch_warnings():
        warnings.simplefilter("error", CompatWarning)
        _fresh(worker_direct=True)  # said already in this process: not again


def test_config_from_object_module_string_namespace_and_envvar(monkeypatch):
    settings = types.ModuleType("proj_settings_for_test")
    settings.CELERY_BROKER_URL = "memory://from-django"
    settings.CELERY_TASK_ALWAYS_EAGER = True
    settings.CELERY_TASK_DEFAULT_QUEUE = "django"
    settings.INSTALLED_APPS = ["x"]  # Django's own: not Celery's, ignored silently
    settings.DEBUG = True
    monkeypatch.setitem(sys.modules, "proj_settings_for_test", settings)
    app = Celery("dj")
    with warnings.catch_warnings():
        warnings.simplefilter("error", CompatWarning)
        app.config_from_object("proj_settings_for_test", namespace="CELERY")
    assert app.conf.broker_url == "memory://from-django" and app.conf.task_always_eager is True
    assert app.settings.default_queue == "django"

    plain = types.ModuleType("celeryconfig_for_test")
    plain.broker_url = "memory://plain"
    plain.task_default_queue = "plain"
    plain.os = os  # a module's imports are not settings
    monkeypatch.setitem(sys.modules, "celeryconfig_for_test", plain)
    monkeypatch.setenv("CELERY_CONFIG_MODULE_TEST", "celeryconfig_for_test")
    other = Celery("plain")
    other.config_from_envvar("CELERY_CONFIG_MODULE_TEST")
    assert other.settings.default_queue == "plain" and other.conf.broker_url == "memory://plain"
    holder = types.SimpleNamespace(task_default_queue="attr")
    monkeypatch.setattr(plain, "conf", holder, raising=False)
    other.config_from_object("celeryconfig_for_test:conf")
    assert other.settings.default_queue == "attr"


def test_routes_given_after_creation_glob_regex_and_router_functions():
    import re

    app = _fresh()

    @app.task(name="video.compress")
    def compress():
        return 1

    @app.task(name="mail.send")
    def send():
        return 1

    @app.task(name="other.thing")
    def thing():
        return 1

    app.conf.task_routes = [
        {"video.*": {"queue": "video"}, re.compile(r"^mail\."): "mail"},
        lambda name, args, kwargs, options, task=None, **kw: {"queue": "fallback"},
    ]
    assert [t._resolve(args=()).queue for t in (compress, send, thing)] == [
        "video", "mail", "fallback"]
    assert compress.apply_async(queue="explicit") and \
        app.broker.stats("explicit")[2].depth == 1  # an explicit queue wins
    assert thing.apply_async(routing_key="rk") and app.broker.stats("rk")[2].depth == 1


# -- eager ----------------------------------------------------------------------------------
def test_always_eager_runs_here_with_celerys_results():
    app = _fresh(task_always_eager=True)
    calls = []

    @app.task(bind=True, autoretry_for=(KeyError,), max_retries=2)
    def flaky(self, x):
        calls.append(self.request.retries)
        if len(calls) < 3:
            raise KeyError(x)
        return (x, self.request.is_eager, self.request.id)

    @app.task(bind=True, max_retries=1)
    def retrying(self):
        raise self.retry(countdown=10)

    res = flaky.delay(5)  # Celery: each retry runs at once, inside the run that asked for it ...
    assert isinstance(res, EagerResult) and calls == [0, 1, 2]
    assert res.state == states.RETRY and isinstance(res.get(), Retry)  # ... which ends as RETRY

    @app.task(bind=True)
    def plain(self, x):
        return (x, self.request.is_eager, self.request.id)

    done = plain.delay(5)
    assert done.state == states.SUCCESS and done.get() == (5, True, done.id)
    failed = retrying.apply_async()
    assert failed.state == states.FAILURE and isinstance(failed.result, MaxRetriesExceededError)
    with pytest.raises(MaxRetriesExceededError):
        failed.get()
    assert failed.get(propagate=False).__class__ is MaxRetriesExceededError
    app.conf.task_eager_propagates = True
    with pytest.raises(MaxRetriesExceededError):
        retrying.delay()
    calls.clear()
    with pytest.raises(Retry):
        flaky.delay(6)
    with pytest.raises(TypeError, match="missing a required argument"):
        flaky.delay()  # Celery's typing: the call is checked when it is sent


def test_shared_task_reaches_apps_made_before_and_after():
    name = f"shared_{uuid.uuid4().hex[:8]}"
    before = _fresh()

    @shared_task(name=name)
    def shared(x):
        return x + 1

    after = _fresh(task_always_eager=True)
    assert name in before.tasks and name in after.tasks
    assert shared.delay(1).get() == 2  # the current app (the newest) runs it eagerly


# -- in a real worker -----------------------------------------------------------------------
def test_signals_and_base_class_hooks_fire_in_a_real_worker(app, proj_worker, hook_log, r):
    w = proj_worker(queues="default", env={"FASTQ_HOOK_LOG": os.environ["FASTQ_HOOK_LOG"]})
    ok, bad = proj.add.delay(2, 3), proj.fail.delay("boom")
    good, broken = proj.audited.delay(4), proj.audited.delay(-1)
    retried = proj.annotated.delay()
    revoked = proj.add.apply_async((1, 1), countdown=0.5)
    app.control.revoke(revoked.id)
    unknown = app.send_task("tests.apps.celery_proj.nobody_has_this", (1,))
    assert ok.get(timeout=20) == 5 and good.get(timeout=20) == 40
    for res in (bad, broken, retried):
        with pytest.raises(Exception):  # noqa: B017 - the types are checked through the signals
            res.get(timeout=20)
    wait_for(lambda: hook_log("task_revoked") and hook_log("task_unknown"), 20,
             message="the revoked and the unknown task")

    sent = {row["id"] for row in hook_log("before_task_publish")}
    assert {ok.id, bad.id, good.id, broken.id, retried.id, revoked.id} <= sent
    assert {row["id"] for row in hook_log("after_task_publish")} >= sent - {None}
    prerun = {row["id"]: row for row in hook_log("task_prerun")}
    assert prerun[ok.id]["args"] == [2, 3] and prerun[ok.id]["task"].endswith(".add")
    post = {(row["id"], row["state"]) for row in hook_log("task_postrun")}
    assert {(ok.id, "SUCCESS"), (bad.id, "FAILURE"), (retried.id, "RETRY"),
            (retried.id, "FAILURE")} <= post
    assert [row["result"] for row in hook_log("task_success")] == [5]  # sender filter: add only
    failures = {row["id"]: row for row in hook_log("task_failure")}
    assert failures[bad.id]["exc"] == "ValueError" and failures[bad.id]["einfo"] is True
    assert failures[broken.id]["exc"] == "KeyError"
    assert failures[retried.id]["exc"] == "LookupError"  # once, after its one retry
    assert [row["id"] for row in hook_log("task_retry")] == [retried.id]
    [rev] = hook_log("task_revoked")
    assert rev["id"] == revoked.id and rev["terminated"] is False
    [unk] = hook_log("task_unknown")
    assert unk["id"] == unknown.id and unk["name"].endswith("nobody_has_this")

    assert [row["id"] for row in hook_log("before_start")] == [good.id, broken.id] or \
        sorted(row["id"] for row in hook_log("before_start")) == sorted([good.id, broken.id])
    assert [row["retval"] for row in hook_log("on_success")] == [40]
    [onf] = hook_log("on_failure")
    assert onf["id"] == broken.id and onf["exc"] == "KeyError" and onf["tb"] is True
    assert sorted(row["status"] for row in hook_log("after_return")) == ["FAILURE", "SUCCESS"]

    assert len(hook_log("worker_init")) == 1 and len(hook_log("worker_ready")) == 1
    [logger] = hook_log("after_setup_logger")  # in the supervisor, once, as Celery's worker
    assert logger["logger"] == "root" and logger["loglevel"] == 20  # -l info
    assert len(hook_log("worker_process_init")) == 2
    assert w.stop(signal.SIGTERM) == 0
    assert len(hook_log("worker_process_shutdown")) == 2 and len(hook_log("worker_shutdown")) == 1


def test_request_routing_and_progress_in_a_real_worker(app, proj_worker):
    proj_worker(queues="default,side")
    res = proj.whoami.apply_async((1, "a"), {"k": 2})
    req = res.get(timeout=20)
    assert req["id"] == res.id and req["args"] == [1, "a"] and req["kwargs"] == {"k": 2}
    assert req["retries"] == 0 and req["queue"] == "default" and req["hostname"]
    assert req["called_directly"] is False and req["is_eager"] is False
    assert req["root_id"] == res.id and req["task"] == proj.whoami.name
    assert proj.side_job.delay(3).get(timeout=20) == "side:3"
    assert app.settings.default_queue == "default"

    job = proj.progress.delay(3, 0.3)
    seen = wait_for(lambda: job.state == "PROGRESS" and job.info, 20, message="PROGRESS")
    assert seen["total"] == 3 and 1 <= seen["current"] <= 3
    assert job.get(timeout=20) == "done" and job.state == states.SUCCESS


def test_reject_and_ignore_from_a_task(app, proj_worker, r):
    proj_worker(queues="default")
    again = proj.refuse.delay(True)
    assert again.get(timeout=20) == "second delivery ran"
    refused = proj.refuse.delay(False)
    wait_for(lambda: refused.state == states.REJECTED, 20, message="REJECTED")
    with pytest.raises(Exception, match="never wanted"):
        refused.get(timeout=1)
    dead = r.xrange(keys.dlq("default"))
    assert [f[b"reason"] for _id, f in dead] == [b"rejected: never wanted"]

    ignored = proj.ignored.delay()
    wait_for(lambda: all(st.pending == 0 and st.depth == 0 for st in app.broker.stats("default")),
             20, message="the ignored task acked")
    time.sleep(0.1)
    assert ignored.state == "PROGRESS" and not ignored.ready()  # no outcome written


def test_max_tasks_per_child_replaces_children(app, proj_worker):
    proj_worker(concurrency=1, queues="default", extra=["--max-tasks-per-child", "2"])
    pids = [proj.pid.delay().get(timeout=20) for _ in range(6)]
    assert len(set(pids)) == 3 and pids[0] == pids[1] and pids[2] == pids[3]


def test_beat_init_and_the_logging_signals(r):
    import threading

    from fastq.beat import Beat
    from fastq.compat import signals

    app = Celery("signalled", broker=os.environ["FASTQ_BROKER_URL"])
    seen = []

    def on_beat(sender=None, **kw):
        seen.append(("beat_init", sender))

    def on_setup(loglevel=None, logfile=None, **kw):
        seen.append(("setup_logging", loglevel, logfile))

    def on_after(logger=None, loglevel=None, **kw):
        seen.append(("after_setup_logger", logger.name, loglevel))

    def on_task_logger(logger=None, loglevel=None, **kw):
        seen.append(("after_setup_task_logger", logger.name, loglevel))

    signals.beat_init.connect(on_beat)
    signals.setup_logging.connect(on_setup)
    signals.after_setup_logger.connect(on_after)
    signals.after_setup_task_logger.connect(on_task_logger)
    try:
        app.setup_logging("warning", "beat.log")  # a receiver: fastq leaves logging to it
        assert seen == [("setup_logging", 30, "beat.log"), ("after_setup_logger", "root", 30),
                        ("after_setup_task_logger", "celery.task", 30)]
        from fastq.compat.utils.log import get_task_logger

        assert get_task_logger("proj.tasks").parent.name == "celery.task"
        seen.clear()
        beat = Beat(app)
        runner = threading.Thread(target=beat.run, daemon=True)
        runner.start()
        wait_for(lambda: any(s[0] == "beat_init" for s in seen), 10, message="beat_init")
        beat.stop()
        runner.join(10)
        assert [s[1] for s in seen if s[0] == "beat_init"] == [beat]
    finally:
        signals.beat_init.disconnect(on_beat)
        signals.setup_logging.disconnect(on_setup)
        signals.after_setup_logger.disconnect(on_after)
        signals.after_setup_task_logger.disconnect(on_task_logger)


def test_an_abortable_task_stops_when_aborted(app, proj_worker):
    from fastq.compat.contrib.abortable import ABORTED, AbortableAsyncResult

    proj_worker()
    res = proj.patient.delay()
    assert isinstance(res, AbortableAsyncResult) is False  # delay() gives a plain AsyncResult
    handle = proj.patient.AsyncResult(res.id)
    assert isinstance(handle, AbortableAsyncResult) and not handle.is_aborted()
    time.sleep(0.3)  # running by now
    handle.abort()
    assert handle.state == ABORTED or handle.ready()
    assert res.get(timeout=20) == "aborted"
    finished = proj.patient.delay(0.2)
    assert finished.get(timeout=20) == "finished"
