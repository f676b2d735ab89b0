"""The memory:// broker and fastq.testing: real tasks, real Child, no Redis involved."""
from __future__ import annotations

import asyncio
import threading
import time
import uuid
from types import SimpleNamespace

import msgpack
import pytest

from fastq import App, AsyncResult, keys
from fastq._core import encode_message
from fastq.broker import connect
from fastq.broker.base import Finish
from fastq.broker.memory import MemoryBroker
from fastq.errors import TaskError
from fastq.errors import TimeoutError as FastqTimeoutError
from fastq.message import Message
from fastq.testing import drain, worker_thread
from fastq.worker.child import Child

NORMAL = keys.PRIORITY_NAMES.index("normal")


class CustomError(Exception):
    pass


def make_app(**settings) -> SimpleNamespace:
    """A fresh App on its own memory broker, with a few tasks; returns them as attributes."""
    app = App("memtest", broker=f"memory://{uuid.uuid4().hex}", **settings)
    order: list[str] = []

    @app.task(name="add")
    def add(x, y):
        return x + y

    @app.task(name="fail")
    def fail(kind, message="boom"):
        raise {"ValueError": ValueError, "KeyError": KeyError, "CustomError": CustomError}[kind](message)

    @app.task(name="log_order")
    def log_order(tag):
        order.append(tag)

    @app.task(name="async_add")
    async def async_add(x, y):
        await asyncio.sleep(0.001)
        return x + y

    @app.task(name="slow")
    def slow(seconds, value):
        time.sleep(seconds)
        return value

    @app.task(name="fan_out")
    def fan_out(n):
        return [add.delay(i, i).id for i in range(n)]

    @app.task(name="whoami", bind=True)
    def whoami(self):
        return [self.name, self.request.id]

    @app.task(name="noop", ignore_result=True)
    def noop():
        return 1

    @app.task(name="echo_json", serializer="json", queue="json_q")
    def echo_json(value):
        return value

    return SimpleNamespace(app=app, broker=app.broker, order=order, add=add, fail=fail,
                           log_order=log_order, async_add=async_add, slow=slow, fan_out=fan_out,
                           whoami=whoami, noop=noop, echo_json=echo_json)


@pytest.fixture
def t():
    ns = make_app()
    yield ns
    ns.app.close()


# -- sending and results ----------------------------------------------------------------------
def test_delay_apply_async_map_starmap_and_batch_then_drain(t):
    r1 = t.add.delay(2, 3)
    r2 = t.add.apply_async((10,), {"y": 5}, priority="high")
    mapped = t.add.starmap([(i, 1) for i in range(20)])
    with t.app.batch():
        batched = [t.add.delay(i, i) for i in range(30)]
        assert t.broker.stats("default")[NORMAL].depth == 21  # nothing of the batch sent yet
    assert t.broker.stats("default")[NORMAL].depth == 51
    assert drain(t.app) == 52
    assert r1.get(timeout=1) == 5
    assert r2.get(timeout=1) == 15
    assert [r.get(timeout=1) for r in mapped] == [i + 1 for i in range(20)]
    assert [r.get(timeout=1) for r in batched] == [2 * i for i in range(30)]
    assert r1.state == "SUCCESS" and r1.ready() and r1.successful() and not r1.failed()
    assert all(st.depth == 0 and st.pending == 0 for st in t.broker.stats("default"))


def test_map_bind_ignore_result_and_other_queues(t):
    results = t.echo_json.map(["a", {"k": [1, 2]}, None])
    who = t.whoami.delay()
    quiet = t.noop.delay()
    assert t.broker.queues() == ["default", "json_q"]
    assert drain(t.app) == 5
    assert [r.get(timeout=1) for r in results] == ["a", {"k": [1, 2]}, None]
    assert who.get(timeout=1) == ["whoami", who.id]
    assert quiet.state == "PENDING" and not quiet.ready()  # ignore_result: nothing stored


def test_tasks_sent_by_tasks_are_drained_too(t):
    parent = t.fan_out.delay(5)
    assert drain(t.app) == 6
    children = [AsyncResult(i, t.app) for i in parent.get(timeout=1)]
    assert [c.get(timeout=1) for c in children] == [0, 2, 4, 6, 8]


def test_exceptions_builtin_custom_and_propagate_false(t):
    value_error = t.fail.delay("ValueError", "bad value")
    key_error = t.fail.delay("KeyError", "missing")
    custom = t.fail.delay("CustomError", "custom boom")
    drain(t.app)

    with pytest.raises(ValueError, match="bad value") as info:
        value_error.get(timeout=1)
    assert any("remote traceback" in note for note in info.value.__notes__)
    with pytest.raises(KeyError):
        key_error.get(timeout=1)
    with pytest.raises(TaskError) as info:
        custom.get(timeout=1)
    assert info.value.remote_type == f"{__name__}.CustomError"
    assert info.value.remote_message == "custom boom"
    assert "CustomError" in info.value.remote_traceback

    exc = value_error.get(timeout=1, propagate=False)
    assert isinstance(exc, ValueError) and exc.args == ("bad value",)
    fresh = AsyncResult(custom.id, t.app)
    assert fresh.state == "FAILURE" and fresh.ready() and fresh.failed() and not fresh.successful()
    assert isinstance(fresh.result, TaskError)
    assert "custom boom" in fresh.traceback


def test_get_times_out_while_nothing_runs_and_pending_state(t):
    r = t.add.delay(1, 1)
    assert r.state == "PENDING" and not r.ready()
    started = time.monotonic()
    with pytest.raises(FastqTimeoutError):
        r.get(timeout=0.05)
    assert 0.04 <= time.monotonic() - started < 1


def test_async_tasks_run_on_the_childs_event_loop(t):
    results = [t.async_add.delay(i, 1) for i in range(10)]
    assert drain(t.app) == 10
    assert [r.get(timeout=1) for r in results] == list(range(1, 11))


# -- priorities and dead letters --------------------------------------------------------------
def test_critical_runs_before_batch_within_a_drained_batch(t):
    with t.app.batch():
        for i in range(100):
            t.log_order.apply_async((f"b{i}",), priority="batch")
        for i in range(100):
            t.log_order.apply_async((f"c{i}",), priority="critical")
    assert drain(t.app) == 200
    kinds = [tag[0] for tag in t.order]
    # Smooth weighted round robin, weights 16:1: critical dominates, batch is not starved.
    assert kinds[:17].count("c") == 16
    assert kinds[:50].count("c") >= 45
    assert max(i for i, k in enumerate(kinds) if k == "c") < 110  # critical all done early
    # Within a level, FIFO.
    assert [x for x in t.order if x[0] == "c"] == [f"c{i}" for i in range(100)]
    assert [x for x in t.order if x[0] == "b"] == [f"b{i}" for i in range(100)]


def test_unknown_tasks_and_garbage_go_to_dead_letters_and_the_rest_runs(t):
    before = t.add.delay(1, 2)
    t.broker.send("default", NORMAL, b"\x00garbage\xff")
    t.broker.send("default", NORMAL, encode_message(Message("id-unknown", "no.such.task", b"\x92\x90\x80")))
    t.broker.send("default", NORMAL, encode_message(Message("id-badbody", "add", b"\xc1")))
    after = t.add.delay(2, 2)
    assert drain(t.app) == 2
    assert before.get(timeout=1) == 3 and after.get(timeout=1) == 4

    dead = t.broker.dead_letters("default")
    assert len(dead) == 3
    reasons = [fields[b"reason"].decode() for _, fields in dead]
    assert reasons[0].startswith("undecodable message")
    assert "unknown task 'no.such.task'" in reasons[1]
    assert reasons[2].startswith("undecodable body")
    assert dead[0][1][b"m"] == b"\x00garbage\xff"  # the original bytes are kept
    assert dead[1][1][b"id"] == b"id-unknown"
    assert dead[1][1][b"consumer"] == b"testing:drain"
    ids = [eid for eid, _ in dead]
    assert ids == sorted(ids, key=lambda e: tuple(map(int, e.split(b"-"))))
    assert t.broker.dead_letters("default", count=1) == dead[:1]
    assert t.broker.stats("default")[NORMAL].depth == 0  # dead letters were acked out


# -- a worker in a thread ---------------------------------------------------------------------
def test_worker_thread_serves_while_get_blocks(t):
    with worker_thread(t.app) as child:
        started = time.monotonic()
        r = t.slow.delay(0.2, "done")
        assert r.get(timeout=5) == "done"
        assert time.monotonic() - started >= 0.2
        results = t.add.starmap([(i, i) for i in range(50)])
        assert [x.get(timeout=5) for x in results] == [2 * i for i in range(50)]
        assert child.consumer.startswith("testing:thread:")
        infos = [msgpack.unpackb(w) for w in t.broker.workers()]
        assert child.consumer in [i["consumer"] for i in infos]
        leaving = time.monotonic()
    assert time.monotonic() - leaving < 1  # stopping does not wait for the app's block_ms
    assert child.processed == 51 and child.stopping
    assert not any(th.name == child.consumer for th in threading.enumerate())


def test_worker_thread_stops_warm(t):
    with worker_thread(t.app) as child:
        results = [t.slow.delay(0.02, i) for i in range(5)]
        while child.processed == 0:
            time.sleep(0.005)
    # What it had fetched when asked to stop was finished and acknowledged.
    done = [r for r in results if AsyncResult(r.id, t.app).ready()]
    assert len(done) == child.processed
    stats = t.broker.stats("default")[NORMAL]
    assert stats.pending == 0 and stats.depth == 5 - len(done)


# -- broker semantics -------------------------------------------------------------------------
def test_named_brokers_are_shared_per_url_and_can_be_cleared(t):
    url = t.app.conf.broker_url
    producer = App("producer", broker=url)  # e.g. the code under test builds its own App
    assert producer.broker is t.broker is connect(url) is MemoryBroker.named(url)
    assert connect(f"memory://{uuid.uuid4().hex}") is not t.broker
    r = t.add.delay(1, 1)
    assert producer.broker.stats("default")[NORMAL].depth == 1
    t.app.close()  # closing keeps the data: the next use finds the same broker
    assert drain(t.app) == 1 and r.get(timeout=1) == 2
    t.add.delay(1, 1)
    t.broker.clear()
    assert t.broker.queues() == []
    assert AsyncResult(r.id, t.app).state == "PENDING"
    t.add.delay(1, 1)
    MemoryBroker.reset()
    assert t.broker.stats("default")[NORMAL].depth == 0


def test_purge_drops_waiting_messages_only(t):
    for i in range(5):
        t.add.delay(i, i)
    t.add.apply_async((1, 1), priority="critical")
    taken = t.broker.fetch("c1", ["default"], 1, 0)
    assert len(taken) == 2  # one per stream: critical and normal
    assert t.broker.purge("default") == 4
    assert t.broker.purge("default") == 0
    assert t.broker.purge("nothing-here") == 0
    stats = t.broker.stats("default")
    assert sum(s.depth for s in stats) == 2 and sum(s.pending for s in stats) == 2
    done = Finish()
    for skey, _level, entry_id, _data in taken:
        done.ack(skey, entry_id)
    t.broker.finish(done, 1000)
    assert all(s.depth == 0 and s.pending == 0 for s in t.broker.stats("default"))
    assert drain(t.app) == 0


def test_results_expire_after_result_expires():
    ns = make_app(result_expires=0.05)
    r = ns.add.delay(1, 2)
    drain(ns.app)
    assert r.get(timeout=1) == 3
    time.sleep(0.1)
    fresh = AsyncResult(r.id, ns.app)
    assert fresh.state == "PENDING"
    with pytest.raises(FastqTimeoutError):
        fresh.get(timeout=0.01)


def test_forget_removes_the_result(t):
    r = t.add.delay(1, 2)
    drain(t.app)
    assert r.get(timeout=1) == 3
    r.forget()
    assert r.state == "PENDING"


def test_stats_depth_pending_and_age(t):
    for i in range(3):
        t.add.delay(i, i)
    t.add.apply_async((0, 0), priority="critical")
    time.sleep(0.02)
    stats = t.broker.stats("default")
    assert [s.level for s in stats] == list(range(keys.LEVELS))
    assert [s.depth for s in stats] == [1, 0, 3, 0, 0]
    assert [s.pending for s in stats] == [0] * 5
    assert stats[NORMAL].oldest_age_ms >= 20 and stats[1].oldest_age_ms == 0

    got = t.broker.fetch("c1", ["default"], 2, 0)
    assert [d[1] for d in got] == [0, NORMAL, NORMAL]
    stats = t.broker.stats("default")
    assert (stats[0].depth, stats[0].pending) == (1, 1)
    assert (stats[NORMAL].depth, stats[NORMAL].pending) == (3, 2)
    assert t.broker.stats("unknown")[0].depth == 0


def test_two_consumers_get_distinct_messages(t):
    sent = [t.add.delay(i, 0).id for i in range(10)]
    a = t.broker.fetch("a", ["default"], 4, 0)
    b = t.broker.fetch("b", ["default"], 4, 0)
    rest = t.broker.fetch("a", ["default"], 4, 0)
    assert (len(a), len(b), len(rest)) == (4, 4, 2)
    assert t.broker.fetch("b", ["default"], 4, 0) == []
    ids = [d[2] for d in a + b + rest]
    assert len(set(ids)) == 10
    assert ids == sorted(ids, key=lambda e: tuple(map(int, e.split(b"-"))))  # FIFO, monotonic ids
    assert all(d[0] == keys.stream("default", NORMAL) for d in a + b + rest)
    from fastq._core import decode_message

    assert [decode_message(d[3]).id for d in a + b + rest] == sent


def test_blocking_fetch_wakes_on_send_and_times_out_when_idle(t):
    t.broker.prepare(["default"])
    started = time.monotonic()
    assert t.broker.fetch("c", ["default"], 10, 50) == []
    assert 0.04 <= time.monotonic() - started < 1

    got: list = []
    reader = threading.Thread(target=lambda: got.extend(t.broker.fetch("c", ["default"], 10, 5000)))
    reader.start()
    time.sleep(0.05)
    started = time.monotonic()
    t.add.delay(1, 1)
    reader.join(5)
    assert len(got) == 1 and time.monotonic() - started < 1


def test_own_pending_is_redelivered_after_a_crash(t):
    results = [t.add.delay(i, 100) for i in range(3)]
    crashed = t.broker.fetch("worker-1:0", ["default"], 10, 0)  # fetched, never acked
    assert len(crashed) == 3
    assert t.broker.fetch("other", ["default"], 10, 0) == []  # not handed to anyone else
    again = t.broker.fetch("worker-1:0", ["default"], 10, 0, own_pending=True)
    assert again == crashed  # same ids, same data
    assert t.broker.fetch("other", ["default"], 10, 0, own_pending=True) == []
    assert t.broker.fetch("worker-1:0", ["default"], 2, 0, own_pending=True) == crashed[:2]
    with pytest.raises(TimeoutError, match="pending"):
        drain(t.app, timeout=0.1)  # another consumer cannot finish what worker-1:0 holds

    restarted = Child(t.app, "worker-1:0", ["default"], handle_signals=False)
    assert restarted.recover_own_pending() == 3
    assert [r.get(timeout=1) for r in results] == [100, 101, 102]
    assert t.broker.fetch("worker-1:0", ["default"], 10, 0, own_pending=True) == []
    assert drain(t.app) == 0


def test_heartbeats_expire(t):
    t.broker.heartbeat("w:0", b"info-0", 5000)
    t.broker.heartbeat("w:1", b"info-1", 10)
    time.sleep(0.03)
    assert t.broker.workers() == [b"info-0"]


def test_drain_times_out_on_a_task_that_never_stops_sending():
    ns = make_app()

    @ns.app.task(name="again")
    def again():
        again.delay()

    again.delay()
    with pytest.raises(TimeoutError, match="still ready or pending"):
        drain(ns.app, timeout=0.2)
