"""Remote control (app.control, fastq inspect / control): a real -c 2 worker answers with
Celery's reply shapes; commands reach only the workers they name."""
from __future__ import annotations

import subprocess
import sys
import time

import pytest

from fastq import keys
from tests.conftest import ROOT, app_fixture, wait_for

app = app_fixture("tests.apps.basic")


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fastq", "-A", "tests.apps.basic", *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)


def test_inspect_and_control_a_live_worker(app, start_worker, r):
    from tests.apps.basic import slow_record

    w = start_worker(concurrency=2)
    assert app.control.ping() == [{w.name: {"ok": "pong"}}]
    inspect = app.control.inspect(timeout=0.5)
    assert "tests.apps.basic.add" in inspect.registered()[w.name]
    assert inspect.active_queues()[w.name][0]["name"] == "default"
    stats = inspect.stats()[w.name]
    assert stats["pool"]["max-concurrency"] == 2 and len(stats["pool"]["processes"]) == 2

    running = slow_record.delay(7, 2.0)
    active = wait_for(lambda: inspect.active()[w.name], 10, message="the task running")
    [task] = active
    assert task["id"] == running.id and task["name"] == "tests.apps.basic.slow_record"
    assert task["args"] == [7, 2.0] and task["delivery_info"]["routing_key"] == "default"
    assert task["worker_pid"] in stats["pool"]["processes"]
    app.control.revoke("some-task-id")
    wait_for(lambda: "some-task-id" in inspect.revoked()[w.name], 5, message="the revocation")
    assert inspect.conf()[w.name]["default_queue"] == "default"
    assert app.control.inspect(["nobody@nowhere"], timeout=0.3).ping() is None

    out = _cli("inspect", "ping", "-t", "0.5")
    assert out.returncode == 0 and f"->  {w.name}: OK" in out.stdout, out.stdout + out.stderr
    sent = _cli("call", "tests.apps.basic.add", "-a", "[2, 40]")
    task_id = sent.stdout.strip()
    assert _cli("result", task_id, "-t", "10").stdout.strip() == "42"

    assert running.get(timeout=10) == 7  # the slow task finishes
    stop = _cli("control", "shutdown", "-d", w.name)
    assert stop.returncode == 0
    assert w.proc.wait(20) == 0  # stopped warm, as by SIGTERM
    assert _cli("inspect", "ping", "-t", "0.3").returncode == 69  # nobody left to answer


def test_a_detached_worker_with_pidfile_logfile_and_excluded_queues(app, r, tmp_path):
    pidfile, logfile = tmp_path / "w.pid", tmp_path / "w.log"
    name = "detached-worker"
    launched = _cli("worker", "-c", "1", "-n", name, "-Q", "default,other", "-X", "other",
                    "--pidfile", str(pidfile), "--logfile", str(logfile), "--detach")
    assert launched.returncode == 0  # the command returned; the worker goes on
    try:
        wait_for(pidfile.exists, 20, message="the pid file")
        inspect = app.control.inspect([name], timeout=0.5)
        queues = wait_for(inspect.active_queues, 20, message="the detached worker answering")
        assert [q["name"] for q in queues[name]] == ["default"]  # -X other
        assert "worker starting" in logfile.read_text()
        assert inspect.stats()[name]["pid"] == int(pidfile.read_text())
    finally:
        app.control.shutdown([name])
    wait_for(lambda: not pidfile.exists(), 20, message="the pid file removed at exit")


def _merged(replies: list[dict]) -> dict:
    out: dict = {}
    for reply in replies:
        out.update(reply)
    return out


def test_rate_and_time_limits_change_on_a_running_worker(app, start_worker, r):
    from fastq.errors import SoftTimeLimitExceeded, TimeLimitExceeded
    from tests.apps.basic import add, slow_record

    w = start_worker(concurrency=1)
    control = app.control
    ask = {"reply": True, "timeout": 2.0, "limit": 1}
    assert control.rate_limit("no.such.task", "1/s", **ask) == [{w.name: {"error": "unknown task"}}]
    [bad] = control.rate_limit(add.name, "10/fortnight", **ask)
    assert "Invalid rate limit string" in bad[w.name]["error"]

    # a soft limit on a task that has none: the next run is interrupted
    assert control.time_limit(slow_record.name, soft=0.3, **ask) == \
        [{w.name: {"ok": "time limits set successfully"}}]
    soft = slow_record.delay(1, 5)
    with pytest.raises(SoftTimeLimitExceeded):
        soft.get(timeout=10)
    # a hard limit: the child is killed and replaced, the task fails with TimeLimitExceeded
    control.time_limit(slow_record.name, soft=None, hard=0.5, **ask)
    hard = slow_record.delay(2, 30)
    with pytest.raises(TimeLimitExceeded):
        hard.get(timeout=15)
    control.time_limit(slow_record.name, **ask)  # no limits again (the replacement knows too)
    assert slow_record.delay(3, 0.8).get(timeout=10) == 3

    # a rate limit set at run time: one token a minute, so one run and the rest wait
    assert control.rate_limit(add.name, "1/m", **ask) == \
        [{w.name: {"ok": "new rate limit set successfully"}}]
    first, *rest = [add.delay(i, i) for i in range(3)]
    assert first.get(timeout=10) == 0
    time.sleep(1.0)
    assert [res.state for res in rest] == ["PENDING", "PENDING"]  # deferred, not lost
    assert r.zcard(keys.delayed("default")) == 2
    assert control.rate_limit(add.name, None, **ask) == \
        [{w.name: {"ok": "rate limit disabled successfully"}}]
    assert add.delay(5, 5).get(timeout=10) == 10


def test_pool_size_and_queues_change_on_a_running_worker(app, start_worker, r):
    from tests.apps.basic import add, pid

    w = start_worker(concurrency=1)
    inspect = app.control.inspect([w.name], timeout=1.0)
    ask = {"reply": True, "timeout": 2.0, "limit": 1}

    def processes() -> list[int]:
        return inspect.stats()[w.name]["pool"]["processes"]

    assert app.control.pool_grow(2, **ask) == [{w.name: {"ok": "pool will grow"}}]
    wait_for(lambda: len(processes()) == 3, 10, message="three children")
    assert inspect.stats()[w.name]["pool"]["max-concurrency"] == 3
    pids = {pid.delay().get(timeout=10) for _ in range(30)}
    assert pids <= set(processes())
    assert app.control.pool_shrink(2, **ask) == [{w.name: {"ok": "pool will shrink"}}]
    wait_for(lambda: len(processes()) == 1, 15, message="back to one child")
    assert add.delay(1, 2).get(timeout=10) == 3

    assert _merged(app.control.add_consumer("extra", **ask)) == {w.name: {"ok": "add consumer extra"}}
    assert [q["name"] for q in inspect.active_queues()[w.name]] == ["default", "extra"]
    assert add.apply_async((2, 3), queue="extra").get(timeout=10) == 5
    assert _merged(app.control.cancel_consumer("extra", **ask)) == \
        {w.name: {"ok": "no longer consuming from extra"}}
    wait_for(lambda: [q["name"] for q in inspect.active_queues()[w.name]] == ["default"], 5,
             message="the queue dropped")
    # a read the child started before the change may still bring one from "extra"; a task run
    # from "default" shows its next round has begun, reading "default" alone
    assert add.delay(0, 1).get(timeout=10) == 1
    left = add.apply_async((4, 4), queue="extra")
    time.sleep(1.5)
    assert left.state == "PENDING"  # waits in its queue for a worker that reads it
    [last] = app.control.cancel_consumer("default", **ask)
    assert "last queue" in last[w.name]["error"]
    out = _cli("control", "add_consumer", "extra", "-d", w.name, "-t", "2")
    assert out.returncode == 0 and f"->  {w.name}: OK" in out.stdout, out.stdout + out.stderr
    assert left.get(timeout=10) == 8
    out = _cli("control", "rate_limit", add.name, "none", "-d", w.name, "-t", "2")
    assert "rate limit disabled successfully" in out.stdout, out.stdout + out.stderr
