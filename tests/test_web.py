"""The REST API (fastq/web/api.py) on a real uvicorn server, the real Redis and real workers."""
from __future__ import annotations

import socket
import subprocess
import sys

import httpx
import orjson
import pytest

from fastq import App, keys
from tests.apps.basic import add
from tests.conftest import ROOT, wait_for
from tests.test_dlq import dead_task
from tests.web_server import serve

ADD = "tests.apps.basic.add"
FAIL = "tests.apps.basic.fail"
TOKEN = "write-token-0123456789"
READ_TOKEN = "read-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def web(app, monkeypatch):
    """An httpx client of a server whose writes need TOKEN (reads open)."""
    monkeypatch.setattr(app.conf, "web_token", TOKEN)
    with serve(app) as url, httpx.Client(base_url=url, timeout=10) as client:
        yield client


def finished(web, task_id: str) -> dict:
    def done():
        body = web.get(f"/api/tasks/{task_id}").json()
        return body if body["state"] in ("SUCCESS", "FAILURE") else None
    return wait_for(done, message=f"task {task_id} to finish")


def nothing_sent(r) -> bool:
    return (all(r.xlen(key) == 0 for key in keys.streams("default"))
            and r.zcard(keys.delayed("default")) == 0)


def test_a_task_sent_through_the_api_runs_and_its_outcome_is_read_back(web, start_worker):
    start_worker(concurrency=1)
    sent = web.post("/api/tasks", json={"name": ADD, "args": [2, 3], "priority": "high"},
                    headers=AUTH)
    assert sent.status_code == 201
    done = finished(web, sent.json()["id"])
    assert done["state"] == "SUCCESS" and done["result"] == 5 and done["traceback"] is None
    assert done["name"] == ADD

    failed = web.post("/api/tasks", json={"name": FAIL, "args": ["ValueError", "bad value"]},
                      headers=AUTH).json()["id"]
    done = finished(web, failed)
    assert done["state"] == "FAILURE" and "ValueError: bad value" in done["traceback"]
    assert done["result"] == "ValueError: bad value"
    assert web.get("/api/tasks/never-sent").json()["state"] == "PENDING"


def test_recent_tasks_include_those_the_workers_events_tell_of(web, start_worker):
    """Tasks sent elsewhere (not through the API) show up, with their outcome, once workers
    run with -E."""
    from tests.apps.basic import fail

    start_worker(concurrency=1, extra=["-E"])
    web.get("/api/snapshot")  # the server follows the event stream from now on
    ok, bad = add.delay(20, 1), fail.delay("KeyError", "no such key")
    assert ok.get(timeout=10) == 21
    bad.get(timeout=10, propagate=False)

    def both():
        recent = {t["id"]: t for t in web.get("/api/snapshot").json()["recent"]}
        if recent.get(ok.id, {}).get("state") == "SUCCESS" and \
                recent.get(bad.id, {}).get("state") == "FAILURE":
            return recent
        return None

    recent = wait_for(both, 15, message="the tasks in the dashboard's recent list")
    assert recent[ok.id]["name"] == ADD and recent[ok.id]["result"] == "21"
    assert recent[ok.id]["queue"] == "default"
    assert "KeyError" in recent[bad.id]["result"] and "Traceback" in recent[bad.id]["traceback"]


@pytest.mark.parametrize("body, status, says", [
    (b'{"name": "tests.apps.basic.nope"}', 422, "unknown task"),
    (b'{"name": "tests.apps.basic.add", "args": [1', 422, "JSON"),
    (b'{"name": "tests.apps.basic.add", "args": [1, 2], "priority": "urgent"}', 422,
     "unknown priority"),
    (b'{"name": "tests.apps.basic.add", "args": [1, 2], "priority": 7}', 422, "unknown priority"),
    (b'{"name": "tests.apps.basic.add", "args": [1, 2], "countdown": -1}', 422, "greater than"),
    (b'{"name": "tests.apps.basic.add", "args": [1, 2], "countdown": 1e12}', 422, "less than"),
    (b'{"name": "tests.apps.basic.add", "args": [1, 2, 3]}', 422, "arguments do not fit"),
    (b'{"name": "tests.apps.basic.add", "args": [1, 2], "retries": 3}', 422, "Extra inputs"),
    (b'{"name": "tests.apps.basic.add", "args": [1, 2], "queue": "a b"}', 422, "pattern"),
    (b'["tests.apps.basic.add"]', 422, "valid dictionary"),
    (b'{"name": "tests.apps.basic.echo", "args": ["' + b"x" * 2_000_000 + b'"]}', 413,
     "larger than"),
])
def test_bad_input_gets_a_clear_4xx_and_sends_nothing(web, r, body, status, says):
    resp = web.post("/api/tasks", content=body,
                    headers={**AUTH, "Content-Type": "application/json"})
    assert resp.status_code == status, resp.text
    assert says in resp.text
    assert nothing_sent(r)


def test_a_chunked_body_above_the_limit_is_refused_too(web, r):
    def chunks():  # no Content-Length: the limit is counted while reading
        yield b'{"name": "tests.apps.basic.echo", "args": ["'
        for _ in range(40):
            yield b"x" * 65536
        yield b'"]}'
    resp = web.post("/api/tasks", content=chunks(),
                    headers={**AUTH, "Content-Type": "application/json"})
    assert resp.status_code == 413 and "web_max_body" in resp.json()["detail"]
    assert nothing_sent(r)


def test_a_broker_outage_is_reported_by_health_and_the_snapshot(r):
    down = App("down", broker="redis://127.0.0.1:1")  # nothing listens on port 1
    with serve(down) as url, httpx.Client(base_url=url) as web:
        health = web.get("/health")
        assert health.status_code == 503 and health.json()["status"] == "unavailable"
        snap = wait_for(lambda: web.get("/api/snapshot").json()["error"], message="an error")
        assert snap.startswith("broker unavailable")
        assert web.get("/api/workers").status_code == 503


def test_fastq_web_serves_the_app_from_the_command_line(r):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "fastq", "-A", "tests.apps.basic", "web",
                             "--port", str(port), "-l", "warning"], cwd=str(ROOT),
                            stderr=subprocess.PIPE, text=True)
    try:
        def healthy():
            try:
                return httpx.get(f"http://127.0.0.1:{port}/health").json()
            except httpx.TransportError:
                assert proc.poll() is None, proc.stderr.read()
                return None
        assert wait_for(healthy, timeout=20, message="fastq web to answer")["status"] == "ok"
        refused = httpx.post(f"http://127.0.0.1:{port}/api/tasks", json={"name": ADD})
        assert refused.status_code == 403  # no web_token configured: writes are off
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=10)
    assert "no web_token set" in err


def test_writes_need_the_token_and_reads_can_be_closed_separately(app, r, monkeypatch):
    job = {"name": ADD, "args": [1, 2]}
    with serve(app) as url, httpx.Client(base_url=url) as web:
        refused = web.post("/api/tasks", json=job)  # no token configured: writes are off
        assert refused.status_code == 403 and "FASTQ_WEB_TOKEN" in refused.json()["detail"]
        assert web.get("/api/queues").status_code == 200  # reads open
        monkeypatch.setattr(app.conf, "web_token", TOKEN)
        assert web.post("/api/tasks", json=job).status_code == 401
        assert web.post("/api/tasks", json=job, headers={"Authorization": "Bearer nope"}
                        ).status_code == 403
        assert nothing_sent(r)
        assert web.post("/api/tasks", json=job, headers=AUTH).status_code == 201
        monkeypatch.setattr(app.conf, "web_read_token", READ_TOKEN)
        assert web.get("/api/queues").status_code == 401
        assert web.get("/api/stream").status_code == 401
        assert web.get("/metrics").status_code == 401
        assert web.get("/api/queues", headers={"Authorization": f"Bearer {READ_TOKEN}"}
                       ).status_code == 200
        assert web.get("/api/queues", headers=AUTH).status_code == 200  # the write token reads
        assert web.post("/api/tasks", json=job, headers={
            "Authorization": f"Bearer {READ_TOKEN}"}).status_code == 403  # but cannot write
        assert web.get("/health").status_code == 200  # probes need no token


def test_priority_of_a_waiting_task_and_revoke(web, r):
    task_id = web.post("/api/tasks", json={"name": ADD, "args": [1, 1], "priority": "low"},
                       headers=AUTH).json()["id"]
    assert r.xlen(keys.stream("default", 3)) == 1
    moved = web.put(f"/api/tasks/{task_id}/priority", json={"priority": "critical"}, headers=AUTH)
    assert moved.status_code == 200 and moved.json()["priority"] == 0
    assert r.xlen(keys.stream("default", 0)) == 1 and r.xlen(keys.stream("default", 3)) == 0
    bad = web.put(f"/api/tasks/{task_id}/priority", json={"priority": "sometime"}, headers=AUTH)
    assert bad.status_code == 422 and "unknown priority" in bad.text
    gone = web.put("/api/tasks/not-a-task/priority", json={"priority": 1}, headers=AUTH)
    assert gone.status_code == 409 and "not waiting" in gone.json()["detail"]

    assert web.post(f"/api/tasks/{task_id}/revoke", headers=AUTH).json()["revoked"] is True
    assert r.zscore(keys.REVOKED, task_id) is not None


def test_queues_workers_rates_and_the_live_stream(web, app, start_worker):
    worker = start_worker(concurrency=2)
    for n in range(30):
        web.post("/api/tasks", json={"name": ADD, "args": [n, n]}, headers=AUTH)

    def rates_seen():
        snap = web.get("/api/snapshot").json()
        return snap if any(p["in_per_s"] > 0 for p in snap["throughput"]) and any(
            p["out_per_s"] > 0 for p in snap["throughput"]) else None
    snap = wait_for(rates_seen, message="non-zero in and out rates")
    default = next(q for q in snap["queues"] if q["queue"] == "default")
    assert [lv["priority"] for lv in default["levels"]] == list(keys.PRIORITY_NAMES)

    def all_recent_done():
        recent = web.get("/api/snapshot").json()["recent"]
        return recent if len(recent) == 30 and all(t["state"] == "SUCCESS" for t in recent) else None
    recent = wait_for(all_recent_done, message="the 30 recent tasks to show as finished")
    assert {t["result"] for t in recent} == {repr(2 * n) for n in range(30)}

    queues = web.get("/api/queues").json()
    assert {"depth", "pending", "oldest_age_s", "in_per_s", "out_per_s"} <= set(
        queues[0]["levels"][0])
    workers = web.get("/api/workers").json()["workers"]
    assert [w["worker"] for w in workers] == [worker.name]
    assert len(workers[0]["children"]) == 2 and workers[0]["problems"] == []

    with web.stream("GET", "/api/stream") as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        lines = (line for line in stream.iter_lines() if line.startswith("data: "))
        first = orjson.loads(next(lines)[6:])
        second = orjson.loads(next(lines)[6:])
    assert second["at"] > first["at"] and first["workers"][0]["worker"] == worker.name


def test_dead_letters_browse_requeue_and_purge(web, r, start_worker):
    task_id, entry = dead_task(r, "default", ADD, (20, 22))
    _, other = dead_task(r, "default", ADD, (1, 1))
    listed = web.get("/api/dlq").json()
    assert listed["total"] == 2
    assert [d["dlq_entry_id"] for d in listed["dead_letters"]] == [entry, other]
    assert listed["dead_letters"][0]["task_id"] == task_id
    assert web.get(f"/api/dlq/{task_id}").json()[0]["dlq_entry_id"] == entry
    assert web.get("/api/dlq/1-1").status_code == 404

    assert web.post("/api/dlq/requeue", json={}, headers=AUTH).status_code == 422
    assert web.post("/api/dlq/requeue", json={"ids": [entry]}).status_code == 401
    start_worker(concurrency=1)
    report = web.post("/api/dlq/requeue", json={"ids": [entry]}, headers=AUTH).json()
    assert [d["entry"] for d in report["requeued"]] == [entry] and report["missing"] == []
    assert finished(web, task_id)["result"] == 42

    assert web.post("/api/dlq/purge", json={"all": True}, headers=AUTH).json() == {"purged": 1}
    assert web.get("/api/dlq").json()["total"] == 0


def test_beat_entries_are_listed_and_triggered(web, app, monkeypatch, start_worker):
    monkeypatch.setattr(app.conf, "beat_schedule", {
        "sum-hourly": {"task": ADD, "schedule": 3600.0, "args": (4, 5)}})
    entries = web.get("/api/beat").json()
    assert [(e["name"], e["task"], e["args"], e["last_fired_ms"]) for e in entries] == [
        ("sum-hourly", ADD, [4, 5], None)]
    assert web.post("/api/beat/nope/trigger", headers=AUTH).status_code == 404
    start_worker(concurrency=1)
    fired = web.post("/api/beat/sum-hourly/trigger", headers=AUTH)
    assert fired.status_code == 201
    assert finished(web, fired.json()["id"])["result"] == 9


def test_workflows_health_metrics_and_openapi(web, app, r):
    chain = (add.s(1, 2) | add.s(3)).apply_async()
    running = web.get("/api/workflows").json()["running"]
    assert running and all(isinstance(g, str) for g in running), chain
    assert web.get("/health").json() == {"status": "ok", "workers": 0}
    add.apply_async((1, 1), queue="nobody-reads")
    metrics = web.get("/metrics")
    assert metrics.status_code == 200 and "python_info" in metrics.text
    # no worker serves metrics here: the web server holds the role and reports the queues
    assert 'celery_queue_length{queue_name="nobody-reads"} 1.0' in metrics.text
    assert "fastq_workflows_running 1.0" in metrics.text
    assert r.get(keys.role("metrics")).decode().startswith("web@")
    paths = web.get("/openapi.json").json()["paths"]
    assert {"/api/tasks", "/api/tasks/{task_id}", "/api/tasks/{task_id}/revoke",
            "/api/tasks/{task_id}/priority", "/api/queues", "/api/workers", "/api/dlq",
            "/api/dlq/requeue", "/api/dlq/purge", "/api/beat", "/api/beat/{name}/trigger",
            "/api/workflows", "/health", "/metrics"} <= set(paths)
    assert web.get("/").headers["content-type"].startswith("text/html")
