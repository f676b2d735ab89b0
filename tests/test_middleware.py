"""Middleware hooks, seen from a real ``-c 2`` worker and a real producer (tests/apps/hooked.py)."""
from __future__ import annotations

import json
import os
import signal

import pytest

from fastq import Middleware, SkipMessage, keys
from fastq.middleware import Hooks
from tests.apps import hooked
from tests.conftest import app_fixture, wait_for, worker_fixture

app = app_fixture("tests.apps.hooked")
hooked_worker = worker_fixture("tests.apps.hooked", 2, "app")


@pytest.fixture
def hook_log(tmp_path, monkeypatch):
    path = tmp_path / "hooks.jsonl"
    path.touch()
    monkeypatch.setenv("FASTQ_HOOK_LOG", str(path))

    def read(hook: str | None = None) -> list[dict]:
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        return [row for row in rows if hook is None or row["hook"] == hook]

    return read


def test_every_hook_fires_where_it_should(app, hooked_worker, hook_log, r):
    w = hooked_worker(env={"FASTQ_HOOK_LOG": os.environ["FASTQ_HOOK_LOG"]})
    assert len(hook_log("child_init")) == 2 and len(hook_log("worker_boot")) == 1
    wait_for(lambda: len(hook_log("child_idle")) >= 2, 10, message="each child idle, waiting")

    single = hooked.double.delay(1)
    with app.batch():
        batched = [hooked.double.delay(2), hooked.double.delay(3)]
    mapped = hooked.double.map([4, 5])
    boom, flaky, skipped = hooked.boom.delay(), hooked.flaky.delay(), hooked.skipped.delay()
    sent = [single, *batched, *mapped, boom, flaky, skipped]
    ids = {res.id for res in sent}
    assert {row["id"] for row in hook_log("before_send")} == ids
    assert {row["id"] for row in hook_log("after_send")} == ids  # a batch's after it is written
    r.xadd(keys.stream("default", 2), {"m": b"garbage, not an envelope"})

    assert [res.get(timeout=20) for res in [single, *batched, *mapped]] == [2, 4, 6, 8, 10]
    with pytest.raises(ValueError):
        boom.get(timeout=20)
    with pytest.raises(Exception, match="skipped by the recorder"):
        skipped.get(timeout=20)
    assert skipped.state == "REVOKED"
    wait_for(lambda: len(hook_log("on_dead_letter")) == 2, 20, message="two dead letters")
    # a run's on_dead_letter comes just before its after_execute: wait for that one too
    wait_for(lambda: len([row for row in hook_log("after_execute") if row["id"] == flaky.id]) >= 2,
             10, message="the retried run's after_execute")

    executed = {row["id"]: row for row in hook_log("before_execute")}
    assert set(executed) == ids and {row["header"] for row in executed.values()} == {"recorder"}
    after = {row["id"]: row for row in hook_log("after_execute") if row["id"] != flaky.id}
    assert {res.id: after[res.id]["result"] for res in [single, *batched, *mapped]} == {
        single.id: 2, batched[0].id: 4, batched[1].id: 6, mapped[0].id: 8, mapped[1].id: 10}
    assert after[boom.id]["exc"] == "ValueError" and after[skipped.id]["exc"] == "SkipMessage"
    assert [row["exc"] for row in hook_log("after_execute") if row["id"] == flaky.id] == \
        ["KeyError", "KeyError"]  # the first run and the retry
    [retry] = hook_log("on_retry")
    assert retry["id"] == flaky.id and retry["exc"] == "KeyError" and retry["countdown"] == 0.05
    dead = {row["id"]: row["reason"] for row in hook_log("on_dead_letter")}
    assert dead[flaky.id].startswith("failed after 2 attempts: KeyError")
    assert dead[None].startswith("undecodable message")
    assert not hook_log("ran")  # the skipped task never ran ...
    assert all(st.pending == 0 for st in app.broker.stats("default"))  # ... and was acked
    # after_flush runs once the round trip that acked returned: a moment after the acks land
    wait_for(lambda: sum(row["acks"] for row in hook_log("after_flush")) >= len(ids) + 1, 10,
             message="after_flush of every ack")
    # and once a child has nothing left, child_idle comes after its last after_flush
    wait_for(lambda: [row["hook"] for row in hook_log() if row["hook"] in (
        "after_flush", "child_idle")][-1] == "child_idle", 10, message="child_idle at the end")

    # a killed child is restarted, and its replacement runs child_init again
    pid = w.child_pids(r)[0]
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: len(hook_log("child_init")) == 3, 20, message="the new child's child_init")
    assert len({row["pid"] for row in hook_log("child_init")}) == 3

    assert w.stop(signal.SIGTERM) == 0
    [down] = hook_log("worker_shutdown")
    assert down["name"] == w.name and down["pid"] == hook_log("worker_boot")[0]["pid"]


class RaisingIn(Middleware):
    """Raises in the producer hook named ``hook``."""

    def __init__(self, hook: str):
        self.hook = hook

    def before_send(self, app, message):
        if self.hook == "before_send":
            raise PermissionError(f"no sending {message.task}")

    def after_send(self, app, message):
        if self.hook == "after_send":
            raise RuntimeError(f"after {message.task}")


@pytest.mark.parametrize("hook, error, depth, key_held", [
    ("before_send", PermissionError, 0, False),  # refused: nothing sent, the claim given back
    ("after_send", RuntimeError, 1, True),  # sent: its uniqueness key stays held
])
def test_a_raising_producer_hook(app, r, hook, error, depth, key_held):
    own = type(app)("raising", broker=app.conf.broker_url, middleware=[RaisingIn(hook)])

    @own.task(name="guarded", unique_key="only-one")
    def guarded():
        return 1

    with pytest.raises(error, match="guarded"):
        guarded.delay()
    assert sum(st.depth for st in own.broker.stats("default")) == depth
    assert (r.get(keys.unique("only-one")) is not None) is key_held
    own.close()


def test_only_overridden_hooks_are_called():
    class Partial(Middleware):
        def after_flush(self, child, finish): ...

    class Wrong:  # not a Middleware
        pass

    hooks = Hooks([Middleware(), Partial()])
    assert len(hooks.after_flush) == 1 and hooks.before_execute == () and hooks.before_send == ()
    with pytest.raises(TypeError, match="fastq.Middleware"):
        type(hooked.app)("x", middleware=[Wrong()])
    assert isinstance(SkipMessage("why"), Exception) and SkipMessage("why").state == "REVOKED"


def test_after_send_reports_each_workflow_node_when_it_is_sent(app, hooked_worker, hook_log):
    from fastq import chain

    hooked_worker(env={"FASTQ_HOOK_LOG": os.environ["FASTQ_HOOK_LOG"]})
    res = chain(hooked.double.s(1), hooked.double.s(), hooked.double.s()).delay()
    assert res.get(timeout=20) == 8
    ids = [res.parent.parent.id, res.parent.id, res.id]
    # the first when submitted, the others by the worker that sent each once its parent succeeded
    wait_for(lambda: sorted(row["id"] for row in hook_log("after_send")) == sorted(ids), 10,
             message="after_send of every node")
    assert {row["id"] for row in hook_log("before_send")} == set(ids)  # all built at submission
