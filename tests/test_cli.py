"""The command line, run as a real process."""
from __future__ import annotations

import os
import subprocess
import sys

from fastq import keys
from tests.conftest import ROOT, wait_for


def fastq(*args: str, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fastq", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=str(ROOT),
                          env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})


def test_status_shows_depth_per_priority_and_live_workers(app, start_worker, r):
    from tests.apps.basic import add

    add.apply_async((1, 2), priority="high")
    add.apply_async((1, 2), queue="other", priority="batch")
    out = fastq("-A", "tests.apps.basic", "status")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert any(line.split()[:3] == ["default", "high", "1"] for line in lines), out.stdout
    assert any(line.split()[:3] == ["other", "batch", "1"] for line in lines), out.stdout
    assert "0 live workers, 0 live worker children" in out.stdout
    start_worker(concurrency=2, name="seen", queues="default")
    wait_for(lambda: r.exists(keys.health("seen")), 10, message="the health record")
    out = fastq("status", "-A", "tests.apps.basic")  # both orders of -A work
    assert "1 live workers, 2 live worker children" in out.stdout, out.stdout
    assert "seen (pid" in out.stdout and "0 of 2 children busy" in out.stdout, out.stdout
    assert "seen:0" in out.stdout and "seen:1" in out.stdout


def test_status_shows_a_child_busy_with_a_long_task(app, start_worker, r):
    from tests.apps.basic import slow_record

    start_worker(concurrency=1, name="long", env={"FASTQ_HEARTBEAT_S": "0.2"})
    res = slow_record.delay(1, 3)
    wait_for(lambda: not r.exists(keys.worker("long:0")), 5,
             message="the busy child's own heartbeat to lapse")
    out = fastq("-A", "tests.apps.basic", "status")
    assert "1 live workers, 1 live worker children" in out.stdout, out.stdout
    assert f"with {res.id}" in out.stdout and "1 of 1 children busy" in out.stdout, out.stdout


def test_purge_drops_waiting_messages(app, r):
    from tests.apps.basic import add

    add.starmap([(i, i) for i in range(25)])
    out = fastq("-A", "tests.apps.basic", "purge", "-Q", "default", "-f")
    assert out.returncode == 0, out.stderr
    assert "purged 25 messages" in out.stdout
    assert r.xlen(keys.stream("default", 2)) == 0


def test_worker_with_an_unknown_app_is_a_clear_error(r):
    out = fastq("-A", "no_such_module_xyz", "worker")
    assert out.returncode != 0
    assert "cannot load app 'no_such_module_xyz'" in out.stderr


def test_celery_style_flags_are_accepted(app, start_worker):
    from tests.apps.basic import add

    start_worker(concurrency=1, extra=["--pool", "prefork", "-E", "--without-gossip",
                                       "--without-mingle", "--prefetch-multiplier", "4"])
    assert add.delay(2, 2).get(timeout=10) == 4


def test_demo_runs_a_real_workload_and_reports(r, redis_server):
    out = fastq("demo", "-n", "3000", "-c", "2", env={"FASTQ_BROKER_URL": redis_server.url},
                timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    report = {ln.split()[0]: ln.split()[1] for ln in out.stdout.splitlines()
              if ln.startswith("  ") and len(ln.split()) > 1}
    assert report["tasks"] == "3,000" and report["lost"] == "0"
    assert report["succeeded"] == "2,970"
    assert report["failed"] == "30"  # 1% fail on purpose, and are recorded as failures
    assert "throughput" in report and "latency" in report


def test_report_shows_versions_and_settings_with_the_password_masked(r):
    url = os.environ["FASTQ_BROKER_URL"].replace("redis://", "redis://:hunter2@", 1)
    out = fastq("-A", "tests.apps.basic", "report", env={"FASTQ_BROKER_URL": url})
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("fastq:") and "redis:" in out.stdout and "py:" in out.stdout
    assert "hunter2" not in out.stdout and "redis://:***@" in out.stdout
    assert "default_queue: 'default'" in out.stdout


def test_shell_has_the_app_and_its_tasks(app, start_worker):
    start_worker(concurrency=1)
    script = "print('result', add.delay(2, 3).get(timeout=20), app.main, chain.__name__)\n"
    out = subprocess.run([sys.executable, "-m", "fastq", "-A", "tests.apps.basic", "shell",
                          "--python"], input=script, capture_output=True, text=True, timeout=60,
                         cwd=str(ROOT), env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr
    assert "result 5 tests chain" in out.stdout, out.stdout + out.stderr
