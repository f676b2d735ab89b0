"""Remote control (app.control, fastq inspect / control): a real -c 2 worker answers with
Celery's reply shapes; commands reach only the workers they name."""
from __future__ import annotations

import subprocess
import sys

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
