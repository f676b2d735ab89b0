"""Events of workers run with -E: fastq's own stream (``fastq events``), and Celery's format on
the same Redis, read by an unchanged Flower from PyPI (its API fills from our events and our
answers to its inspect broadcasts)."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from fastq.events.records import from_entry
from tests.conftest import ROOT, app_fixture, wait_for

app = app_fixture("tests.apps.basic")


def _events(app) -> list[dict]:
    _cursor, batches = app.broker.events_since("0", None, count=10_000)
    return [e for b in batches for e in from_entry(b)]


def test_task_and_worker_events_on_fastqs_stream(app, start_worker, r):
    from tests.apps.basic import add, fail

    w = start_worker(concurrency=1, extra=["-E"])
    ok, bad = add.delay(2, 3), fail.delay("KeyError", "gone")
    assert ok.get(timeout=10) == 5
    bad.get(timeout=10, propagate=False)

    def both_done():
        got = _events(app)
        kinds = {(e.get("uuid"), e["type"]) for e in got}
        return got if {(ok.id, "task-succeeded"), (bad.id, "task-failed")} <= kinds else None

    got = wait_for(both_done, 10, message="the events published")
    mine = [e for e in got if e.get("uuid") == ok.id]
    assert [e["type"] for e in mine] == ["task-received", "task-started", "task-succeeded"]
    received, _started, succeeded = mine
    assert received["name"] == add.name and received["args"] == "(2, 3)"
    assert received["hostname"] == w.name and received["queue"] == "default"
    assert succeeded["result"] == "5" and succeeded["runtime"] >= 0
    [failed] = [e for e in got if e.get("uuid") == bad.id and e["type"] == "task-failed"]
    assert "KeyError" in failed["exception"] and "Traceback" in failed["traceback"]
    assert any(e["type"] == "worker-online" and e["hostname"] == w.name for e in got)
    clocks = [e["clock"] for e in mine]
    assert clocks == sorted(clocks)

    out = subprocess.run([sys.executable, "-m", "fastq", "-A", "tests.apps.basic", "events",
                          "--from-start", "-n", "3", "-j"], cwd=ROOT, capture_output=True,
                         text=True, timeout=30)
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert len(lines) == 3 and all("type" in e for e in lines), out.stderr


def test_every_kind_of_run_is_told_with_its_own_message(app, start_worker, r):
    """Retried, expired, async and in-place chain runs: each run's events carry its own
    message's id, name, arguments and attempt (read from the envelope the child ran)."""
    from datetime import UTC, datetime, timedelta

    from fastq.compat import chain
    from tests.apps.basic import add, async_add, retry_once

    pending = async_add.delay(4, 5), add.delay(7, 8)  # one batch: the async run ends last
    start_worker(concurrency=1, extra=["-E"])
    assert [p.get(timeout=10) for p in pending] == [9, 15]
    retried = retry_once.delay()
    assert retried.get(timeout=10) == 1
    expired = add.apply_async((1, 1), expires=datetime.now(UTC) - timedelta(seconds=1))
    last = chain(add.s(1, 2), add.s(10)).apply_async()
    assert last.get(timeout=10) == 13
    first_id = last.parent.id

    def told():
        got = _events(app)
        kinds = {(e.get("uuid"), e["type"]) for e in got}
        want = {(retried.id, "task-retried"), (expired.id, "task-revoked"),
                (last.id, "task-succeeded"), (first_id, "task-succeeded")}
        return got if want <= kinds else None

    got = wait_for(told, 10, message="the events of every run")
    by_id: dict[str, list[dict]] = {}
    for e in got:
        by_id.setdefault(e.get("uuid"), []).append(e)
    attempts = [(e["type"], e.get("retries")) for e in by_id[retried.id]
                if e["type"] in ("task-received", "task-retried", "task-succeeded")]
    assert attempts == [("task-received", 0), ("task-retried", None), ("task-received", 1),
                        ("task-succeeded", None)]
    [retry] = [e for e in by_id[retried.id] if e["type"] == "task-retried"]
    assert "Retry" in retry["exception"]
    [revoked] = [e for e in by_id[expired.id] if e["type"] == "task-revoked"]
    assert revoked["expired"] is True
    [received] = [e for e in got if e["type"] == "task-received" and e["name"] == async_add.name]
    assert received["args"] == "(4, 5)"
    [done] = [e for e in by_id[received["uuid"]] if e["type"] == "task-succeeded"]
    assert done["result"] == "9"
    assert 0.01 <= done["runtime"] < 5  # timed from its coroutine's start (it sleeps 0.01 s)
    steps = [(e["name"], e["root_id"]) for i in (first_id, last.id) for e in by_id[i]
             if e["type"] == "task-received"]
    assert steps == [(add.name, first_id), (add.name, first_id)]
    assert [e["result"] for e in by_id[last.id] if e["type"] == "task-succeeded"] == ["13"]


def test_celerys_format_goes_out_while_someone_listens(app, start_worker, r):
    """Built only while Celery's channel has listeners: one who subscribes late gets the
    events of the rounds after the next try (LISTEN_CHECK_S)."""
    from fastq import keys
    from fastq.events import wire
    from tests.apps.basic import add

    start_worker(concurrency=1, extra=["-E"])
    assert add.delay(1, 1).get(timeout=10) == 2  # published to nobody: the worker stops trying
    listener = r.pubsub(ignore_subscribe_messages=True)
    listener.psubscribe(keys.celery_event_channel(app.broker.db, "*"))
    deadline, seen = time.monotonic() + 10, []
    while time.monotonic() < deadline and not seen:
        sent = add.delay(2, 2)
        sent.get(timeout=10)
        while (message := listener.get_message(timeout=0.2)) is not None:
            body, headers = wire.opened(message["data"])
            seen += [e for e in body if e.get("uuid") == sent.id]
    assert [e["type"] for e in seen] == ["task-received", "task-started", "task-succeeded"]
    listener.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _read(url: str) -> bytes | None:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.read()
    except OSError:
        return None


def _get(url: str):
    body = _read(url)
    return json.loads(body) if body else None


@pytest.fixture
def flower(r):
    """Flower from PyPI, unchanged, on the tests' Redis (``celery --broker=... flower``)."""
    port = _free_port()
    url = os.environ["FASTQ_BROKER_URL"]
    proc = subprocess.Popen([sys.executable, "-m", "celery", f"--broker={url}", "flower",
                             f"--port={port}", "--address=127.0.0.1", "--inspect_timeout=2000"],
                            env={**os.environ, "FLOWER_UNAUTHENTICATED_API": "true"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _read(f"{base}/healthcheck") == b"OK", 30, interval=0.3,
                 message="Flower listening")
        yield base
    finally:
        proc.terminate()
        proc.wait(10)


def test_an_unchanged_flower_lists_fastqs_workers_and_tasks(app, start_worker, r, flower):
    from tests.apps.basic import add, fail

    w = start_worker(concurrency=2, extra=["-E"])
    time.sleep(0.5)  # Flower's event receiver subscribes as it starts
    ok, bad = add.delay(20, 22), fail.delay("ValueError", "nope")
    assert ok.get(timeout=10) == 42
    bad.get(timeout=10, propagate=False)

    def task(task_id: str, state: str):
        info = _get(f"{flower}/api/task/info/{task_id}")
        return info if info and info.get("state") == state else None

    done = wait_for(lambda: task(ok.id, "SUCCESS"), 20, interval=0.3,
                    message="Flower showing the task succeeded")
    assert done["name"] == add.name and done["worker"] == w.name
    assert done["result"] == "42" and done["runtime"] >= 0 and done["args"] == "(20, 22)"
    failed = wait_for(lambda: task(bad.id, "FAILURE"), 20, interval=0.3,
                      message="Flower showing the task failed")
    assert "ValueError" in failed["exception"]

    workers = wait_for(lambda: (_get(f"{flower}/api/workers?refresh=1") or {}).get(w.name),
                       20, interval=0.5, message="Flower's inspect answered by the worker")
    assert workers["stats"]["pool"]["max-concurrency"] == 2
    assert add.name in workers["registered"]
    assert [q["name"] for q in workers["active_queues"]] == ["default"]
    status = _get(f"{flower}/api/workers?status=1") or {}
    assert status.get(w.name) is True  # online, by the worker's heartbeats
