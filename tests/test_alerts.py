"""Alerts (fastq/alerts/, docs/alerts.md) with real workers and a local HTTP receiver: task
failures (aggregated), queue age, dead-letter growth, lost workers, webhook retries and a
receiver that hangs."""
from __future__ import annotations

import importlib
import json
import os
import signal
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from click.testing import CliRunner
from pydantic import ValidationError

from fastq import keys
from fastq._core import encode_message
from fastq.alerts.alert import Alert
from fastq.alerts.delivery import Delivery
from fastq.alerts.failures import FailureAlerts
from fastq.broker.memory import MemoryBroker
from fastq.broker.redis import RedisBroker
from fastq.cli import main
from fastq.config import Settings
from fastq.message import Message
from tests.conftest import app_fixture, wait_for

app = app_fixture("tests.apps.basic")
PAYLOAD_KEYS = {"kind", "summary", "details", "worker", "time"}


class Receiver:
    """A webhook receiver on 127.0.0.1: keeps each JSON body; answers 500 to the first
    ``fail_first`` requests; with ``hang`` set, holds every request until the test ends."""

    def __init__(self, fail_first: int = 0, hang: bool = False):
        self.alerts: list[dict] = []
        self.attempts = 0
        self.fail_first = fail_first
        self.hang = hang
        self.released = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                receiver.attempts += 1
                if receiver.hang:
                    receiver.released.wait(30)
                    return
                if receiver.attempts <= receiver.fail_first:
                    self.send_response(500)
                    self.end_headers()
                    return
                receiver.alerts.append(body)
                self.send_response(204)
                self.end_headers()

            def log_message(self, *_args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def of(self, kind: str) -> list[dict]:
        return [a for a in self.alerts if a["kind"] == kind]

    def close(self) -> None:
        self.released.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    made: list[Receiver] = []

    def make(**options) -> Receiver:
        made.append(Receiver(**options))
        return made[-1]

    yield make
    for rec in made:
        rec.close()


def alert_env(url: str, **settings) -> dict[str, str]:
    env = {"FASTQ_ALERT_WEBHOOKS": url, "FASTQ_ALERT_CHECK_S": "0.2"}
    env.update({f"FASTQ_{k.upper()}": str(v) for k, v in settings.items()})
    return env


# -- the broker verbs, on memory:// and a real server -------------------------------------------
@pytest.fixture(params=["memory", "redis"])
def broker(request):
    if request.param == "memory":
        b = MemoryBroker(f"memory://{uuid.uuid4().hex}")
    else:
        request.getfixturevalue("r")
        b = RedisBroker(request.getfixturevalue("redis_server").url)
    yield b
    b.close()


def test_claim_alert_lets_one_caller_send_until_the_marker_expires(broker):
    assert broker.claim_alert("queue_age:q", 200) is True
    assert broker.claim_alert("queue_age:q", 200) is False
    assert broker.claim_alert("queue_age:other", 200) is True
    wait_for(lambda: broker.claim_alert("queue_age:q", 200), timeout=5, message="marker expiry")


def test_waiting_age_counts_undelivered_messages_only(broker):
    assert broker.waiting_age_ms("nothing") == 0
    broker.prepare(["q"])
    broker.send("q", 2, encode_message(Message("t1", "add", b"\x92\x90\x80")))
    time.sleep(0.05)
    assert broker.waiting_age_ms("q") >= 50
    assert len(broker.fetch("c1", ["q"], 10, 0)) == 1  # delivered: in flight, no longer waiting
    assert broker.waiting_age_ms("q") == 0


# -- settings -------------------------------------------------------------------------------------
def test_bad_alert_settings_are_clear_errors():
    with pytest.raises(ValidationError, match="http:// or https://"):
        Settings(alert_webhooks=["ftp://example.com/x"])
    with pytest.raises(ValidationError, match="dotted paths"):
        Settings(alert_callbacks=["not a path"])
    with pytest.raises(ValueError, match="cannot load 'tests.apps.nowhere:fn'"):
        Delivery(Settings(alert_callbacks=["tests.apps.nowhere:fn"]))


def test_a_worker_with_an_unloadable_callback_refuses_to_start(start_worker, app):
    w = start_worker(concurrency=1, wait=False,
                     env={"FASTQ_ALERT_CALLBACKS": "tests.apps.alerting:missing"})
    assert w.proc.wait(30) != 0
    assert "cannot load 'tests.apps.alerting:missing'" in w.output()


# -- real workers ---------------------------------------------------------------------------------
def test_task_failures_arrive_aggregated_per_task(start_worker, app, receiver):
    rec = receiver()
    start_worker(concurrency=1, env=alert_env(rec.url))
    fail = app.tasks["tests.apps.basic.fail"]
    results = [fail.delay("ValueError", f"bad {i}") for i in range(30)]
    for res in results:
        res.get(timeout=10, propagate=False)
    wait_for(lambda: sum(a["details"]["count"] for a in rec.of("task_failed")) >= 30, timeout=10,
             message="failure alerts")
    alerts = rec.of("task_failed")
    assert sum(a["details"]["count"] for a in alerts) == 30
    assert len(alerts) < 30  # aggregated per task and interval, not one webhook per failure
    first = alerts[0]
    assert set(first) == PAYLOAD_KEYS
    assert first["details"]["task"] == "tests.apps.basic.fail"
    assert "ValueError" in first["details"]["last_error"]
    assert first["worker"].endswith(":0")  # the child that saw them


def test_queue_age_alert_for_a_queue_nobody_reads(start_worker, app, receiver):
    rec = receiver()
    start_worker(concurrency=1, env=alert_env(rec.url, alert_queue_age_s=1))
    app.tasks["tests.apps.basic.add"].apply_async((1, 2), queue="orphan")
    for i in range(5):
        app.tasks["tests.apps.basic.add"].delay(i, i).get(timeout=10)  # read at once: no alert
    wait_for(lambda: rec.of("queue_age"), timeout=10, message="queue-age alert")
    alert = rec.of("queue_age")[0]
    assert alert["details"]["queue"] == "orphan"
    assert alert["details"]["age_s"] > 1
    time.sleep(0.6)  # further checks: the marker (alert_repeat_s) holds back a repeat
    assert [a["details"]["queue"] for a in rec.of("queue_age")] == ["orphan"]


def test_dlq_growth_alert(start_worker, app, receiver):
    rec = receiver()
    start_worker(concurrency=1, env=alert_env(rec.url, alert_dlq_growth=3))

    def three_dead_letters():
        with app.batch(atomic=True):  # all three land at once, so in one check interval
            for _ in range(3):
                app.send_task("tests.apps.basic.no_such_task")  # unknown task: dead-lettered

    # the first check notes the dead letters a queue has (no alert for a backlog found at start),
    # so send until one batch arrived after it
    for _ in range(20):
        three_dead_letters()
        time.sleep(0.6)  # more than a check interval
        if rec.of("dlq_growth"):
            break
    (alert,) = rec.of("dlq_growth")  # one: the marker holds back the next batches' alerts
    assert alert["details"]["queue"] == "default"
    assert alert["details"]["new"] % 3 == 0 and alert["details"]["total"] >= 3


def test_a_killed_worker_is_reported_lost_and_a_stopped_one_is_not(start_worker, r, app,
                                                                    receiver):
    rec = receiver()
    env = alert_env(rec.url, heartbeat_s=0.5)  # a health record lives 1.5 s
    start_worker(concurrency=1, name="watcher", env=env)
    victim = start_worker(concurrency=1, name="victim", env=env)
    leaver = start_worker(concurrency=1, name="leaver", env=env)
    time.sleep(1.0)  # the watcher has seen both health records
    victim.halt(r, signal.SIGKILL)
    assert leaver.stop(signal.SIGTERM) == 0
    assert r.exists(keys.health("leaver"))  # its last record, saying it stopped warm:
    assert CliRunner().invoke(main, ["-A", "tests.apps.basic", "health", "-w", "leaver"]
                              ).exit_code == 2  # not a live worker for `fastq health`
    wait_for(lambda: rec.of("worker_lost"), timeout=10, message="worker-lost alert")
    time.sleep(2.5)  # the leaver's last record has expired, and the watcher looked, by now
    lost = [a["details"]["lost_worker"] for a in rec.of("worker_lost")]
    assert lost == ["victim"]  # once, by one of the workers left; the warm stop is no loss


def test_a_child_killed_under_a_live_supervisor_is_reported(start_worker, r, app, receiver):
    rec = receiver()
    w = start_worker(concurrency=2, env=alert_env(rec.url))
    os.kill(w.child_pids(r)[1], signal.SIGKILL)  # as the OOM killer would
    wait_for(lambda: rec.of("worker_lost"), timeout=10, message="child-lost alert")
    (alert,) = rec.of("worker_lost")
    assert alert["details"]["lost_child"] == f"{w.name}:1" and alert["details"]["exit"] == -9
    assert app.tasks["tests.apps.basic.add"].delay(1, 1).get(timeout=10) == 2  # restarted


def test_a_receiver_failing_at_first_gets_the_alert_after_retries(start_worker, app, receiver):
    rec = receiver(fail_first=2)
    start_worker(concurrency=1, env=alert_env(rec.url, alert_retries=3))
    app.tasks["tests.apps.basic.fail"].delay("KeyError").get(timeout=10, propagate=False)
    wait_for(lambda: rec.of("task_failed"), timeout=15, message="alert after retries")
    assert rec.attempts == 3 and len(rec.of("task_failed")) == 1


def test_a_hanging_receiver_does_not_stop_the_worker(start_worker, app, receiver):
    rec = receiver(hang=True)
    w = start_worker(concurrency=1, env=alert_env(rec.url, alert_timeout_s=3, alert_retries=0))
    fail, add = app.tasks["tests.apps.basic.fail"], app.tasks["tests.apps.basic.add"]
    fail.delay("ValueError").get(timeout=10, propagate=False)
    wait_for(lambda: rec.attempts, timeout=10, message="a webhook request")
    for i in range(20):  # the alert thread waits out its 3 s timeout; the tasks do not
        assert add.delay(i, 1).get(timeout=2) == i + 1
        fail.delay("ValueError").get(timeout=2, propagate=False)
    wait_for(lambda: "alert webhook failed" in w.output(), timeout=10, message="timeout logged")


def test_callbacks_from_on_alert_and_from_settings(start_worker, tmp_path, receiver):
    alerting = importlib.import_module("tests.apps.alerting")
    alerting.app.close()
    sink = tmp_path / "alerts.jsonl"
    start_worker(concurrency=1, module="tests.apps.alerting",
                 env={"ALERT_SINK": str(sink), "FASTQ_ALERT_CHECK_S": "0.2",
                      "FASTQ_ALERT_CALLBACKS": "tests.apps.alerting:record"})
    alerting.fail.delay().get(timeout=10, propagate=False)
    wait_for(lambda: sink.exists() and len(sink.read_text().splitlines()) >= 2, timeout=10,
             message="both callbacks")
    got = [json.loads(line) for line in sink.read_text().splitlines()]
    assert sorted(g["source"] for g in got) == ["on_alert", "setting"]
    assert all(g["kind"] == "task_failed" and g["details"]["count"] == 1 for g in got)
    alerting.app.close()


def test_delivery_retries_then_gives_up_without_raising(receiver):
    rec = receiver(fail_first=100)
    out = Delivery(Settings(alert_webhooks=[rec.url], alert_retries=1, alert_timeout_s=1))
    out.send(Alert("queue_age", "test", {}, "here"))
    assert out.close(timeout=5) is True  # delivered or given up: nothing left queued
    assert rec.attempts == 2 and rec.alerts == []


def test_failure_counts_report_the_most_failing_tasks_one_by_one_and_the_rest_together(app):
    failures = FailureAlerts(app)
    tasks = [t for name, t in sorted(app.tasks.items()) if name.startswith("tests.")][:12]
    assert len(tasks) == 12
    for rank, task in enumerate(tasks):
        for i in range(20 - rank):
            failures.after_execute(task, Message(f"{rank}-{i}", task.name, b""), None,
                                   ValueError("x"))
    retried = Message("r", tasks[0].name, b"")
    failures.on_retry(tasks[0], retried, ValueError("again"), 1.0)
    failures.after_execute(tasks[0], retried, None, ValueError("again"))  # a retry: not counted
    failures.after_execute(tasks[0], Message("ok", tasks[0].name, b""), 3, None)
    alerts = failures.collect()
    assert [a.details["task"] for a in alerts] == [t.name for t in tasks[:10]] + [None]
    assert [a.details["count"] for a in alerts[:10]] == list(range(20, 10, -1))
    assert alerts[-1].details["tasks"] == {tasks[10].name: 10, tasks[11].name: 9}
    assert failures.collect() == []  # counted once
