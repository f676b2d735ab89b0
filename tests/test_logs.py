"""Worker logs: JSON or console (--log-format), the running task's id / name / queue / attempt on
every line logged inside it (structlog and the standard library), no line per task unless asked
for (--log-tasks)."""
from __future__ import annotations

import json

from tests.conftest import app_fixture, wait_for

app = app_fixture("tests.apps.basic")


def _json_lines(text: str) -> list[dict]:
    out = []
    for line in text.splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            pass
    return out


def test_json_lines_carry_the_running_tasks_fields(app, start_worker, r):
    from tests.apps.basic import add, chatty

    w = start_worker(concurrency=1, extra=["--log-format", "json"])
    res = chatty.delay(7)
    assert res.get(timeout=10) == 7
    quiet = add.delay(1, 1)
    assert quiet.get(timeout=10) == 2

    def logged():
        lines = _json_lines(w.output())
        mine = [e for e in lines if e.get("task_id") == res.id]
        return lines if len(mine) >= 2 else None

    lines = wait_for(logged, 10, message="the task's log lines")
    mine = {e["event"]: e for e in lines if e.get("task_id") == res.id}
    for event in ("stdlib line 7", "structlog line"):
        assert mine[event]["task_name"] == chatty.name
        assert mine[event]["queue"] == "default" and mine[event]["attempt"] == 0
        assert mine[event]["level"] == "warning"
    assert mine["structlog line"]["n"] == 7
    assert mine["stdlib line 7"]["logger"] == "tests.chatty"
    assert any(e.get("event") == "worker starting" for e in lines)  # fastq's own lines: JSON too
    assert not [e for e in lines if e.get("task_id") == quiet.id]  # no line per task by default


def test_log_tasks_writes_one_line_per_run(app, start_worker, r):
    from tests.apps.basic import add

    w = start_worker(concurrency=1, extra=["--log-format", "json", "--log-tasks"])
    res = add.delay(2, 2)
    assert res.get(timeout=10) == 4
    done = wait_for(lambda: [e for e in _json_lines(w.output())
                             if e.get("event") == "task done" and e.get("task_id") == res.id],
                    10, message="the task's line")
    assert done[0]["outcome"] == "succeeded" and done[0]["task_name"] == add.name
    assert done[0]["runtime_s"] >= 0
