"""The memory:// broker and fastq.testing: real tasks, real Child, no Redis involved.

The protocol checks near the end (fixture ``broker``) run on memory:// and on the session's real
Redis alike, so that the in-process broker keeps the Redis broker's semantics.
"""
from __future__ import annotations

import asyncio
import threading
import time
import uuid
from types import SimpleNamespace

import msgpack
import pytest
import redis

from fastq import App, AsyncResult, keys
from fastq._core import encode_message
from fastq.broker import connect
from fastq.broker.base import Finish
from fastq.broker.memory import MemoryBroker
from fastq.errors import TimeoutError as FastqTimeoutError
from fastq.message import Message
from fastq.testing import drain, worker_thread
from fastq.worker.child import Child
from tests.conftest import other_server

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
    with pytest.raises(CustomError, match="custom boom") as info:  # this module defines it
        custom.get(timeout=1)
    assert any("CustomError" in note for note in info.value.__notes__)

    exc = value_error.get(timeout=1, propagate=False)
    assert isinstance(exc, ValueError) and exc.args == ("bad value",)
    fresh = AsyncResult(custom.id, t.app)
    assert fresh.state == "FAILURE" and fresh.ready() and fresh.failed() and not fresh.successful()
    assert isinstance(fresh.result, CustomError)
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


def test_two_flooded_levels_share_the_fetches_by_weight():
    # prefetch 10, no ageing: after one plain read (10 of each), reads are shared 16:1
    t = make_app(prefetch=10, priority_ageing_ms=0)
    with t.app.batch():
        for i in range(1000):
            t.log_order.apply_async((f"c{i}",), priority="critical")
            t.log_order.apply_async((f"b{i}",), priority="batch")
    assert drain(t.app, timeout=30) == 2000
    after_first_read = [tag[0] for tag in t.order[20:700]]
    # one read holding `prefetch` of each level would make this half and half
    assert 20 <= after_first_read.count("b") <= 60, after_first_read.count("b")
    assert [x for x in t.order if x[0] == "b"] == [f"b{i}" for i in range(1000)]  # all ran, FIFO


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


# -- delayed messages, retries, revocations, uniqueness (worker level) ------------------------
def test_countdown_task_runs_via_worker_thread_after_its_delay(t):
    with worker_thread(t.app):
        sent = time.time()
        r = t.add.apply_async((2, 3), countdown=0.3)
        assert r.state == "PENDING"
        assert sum(s.depth for s in t.broker.stats("default")) == 0  # waits in the delayed set
        assert r.get(timeout=5) == 5
        ran_after = time.time() - sent
    assert 0.298 <= ran_after < 1.5  # (the due time is whole ms, truncated)


def test_blocking_fetch_wakes_when_a_delayed_message_falls_due(t):
    t.broker.prepare(["default"])
    t.add.apply_async((1, 1), countdown=0.15)
    started = time.monotonic()
    got = t.broker.fetch("c", ["default"], 10, 5000)  # blocks far longer than the countdown
    waited = time.monotonic() - started
    assert len(got) == 1 and 0.13 <= waited < 0.5
    assert t.broker.fetch("c", ["default"], 10, 0) == []


def test_blocking_fetch_wakes_for_a_delayed_message_sent_while_it_waits(t):
    t.broker.prepare(["default"])
    t.add.apply_async((1, 1), countdown=10)  # the next due time is far away...
    got: list = []
    reader = threading.Thread(target=lambda: got.extend(t.broker.fetch("c", ["default"], 10, 5000)))
    reader.start()
    time.sleep(0.05)
    started = time.monotonic()
    t.add.apply_async((2, 2), countdown=0.1)  # ...until this one is sent
    reader.join(5)
    assert len(got) == 1 and 0.08 <= time.monotonic() - started < 0.5


def test_drain_waits_for_delayed_messages_due_within_its_timeout_only(t):
    soon = t.add.apply_async((1, 2), countdown=0.2)
    late = t.add.apply_async((3, 4), countdown=30)
    started = time.monotonic()
    assert drain(t.app, timeout=2) == 1
    assert 0.2 <= time.monotonic() - started < 1.5
    assert soon.get(timeout=1) == 3
    assert late.state == "PENDING"  # still delayed: drain did not wait 30 s for it
    assert t.broker.promote("default", int(time.time() * 1000) + 31_000) == (1, None)
    assert drain(t.app) == 1 and late.get(timeout=1) == 7


def test_retry_schedule_in_memory_ends_in_failure_and_a_dead_letter():
    ns = make_app()
    attempts: list[tuple[int, float]] = []

    @ns.app.task(name="flaky", bind=True, retry_for=(ValueError,), retry_schedule=[0.05, 0.05],
                 max_retries=2)
    def flaky(self):
        attempts.append((self.request.attempt, time.monotonic()))
        raise ValueError(f"attempt {self.request.attempt}")

    r = flaky.delay()
    assert drain(ns.app, timeout=5) == 1  # retried attempts are not counted as failed runs
    assert [a for a, _ in attempts] == [0, 1, 2]
    gaps = [b - a for (_, a), (_, b) in zip(attempts, attempts[1:], strict=False)]
    assert all(g >= 0.045 for g in gaps), gaps
    assert r.state == "FAILURE"
    with pytest.raises(ValueError, match="attempt 2"):
        r.get(timeout=1)
    [(_eid, fields)] = ns.broker.dead_letters("default")
    assert fields[b"id"] == r.id.encode() and fields[b"attempts"] == b"3"
    assert fields[b"reason"].startswith(b"failed after 3 attempts: ValueError")
    errors = msgpack.unpackb(fields[b"errors"])
    assert [e["attempt"] for e in errors] == [0, 1, 2]
    assert [e["message"] for e in errors] == ["attempt 0", "attempt 1", "attempt 2"]
    assert all(e["type"] == "ValueError" for e in errors)


def test_retry_state_is_visible_while_the_next_attempt_waits():
    ns = make_app()
    attempts: list[int] = []

    @ns.app.task(name="once_flaky", bind=True, retry_for=(KeyError,), retry_schedule=[0.3])
    def once_flaky(self):
        attempts.append(self.request.attempt)
        if self.request.attempt == 0:
            raise KeyError("first time")
        return "ok"

    with worker_thread(ns.app):
        r = once_flaky.delay()
        deadline = time.monotonic() + 5
        while r.state != "RETRY" and time.monotonic() < deadline:
            time.sleep(0.01)
        assert r.state == "RETRY"
        assert r.get(timeout=5) == "ok"
    assert attempts == [0, 1] and r.state == "SUCCESS"
    assert ns.broker.dead_letters("default") == []


def test_revoke_before_drain_gives_revoked(t):
    from fastq.errors import TaskRevokedError

    revoked = t.add.delay(1, 1)
    delayed = t.add.apply_async((2, 2), countdown=0.1)
    kept = t.add.delay(3, 3)
    t.app.control.revoke([revoked.id, delayed.id])
    assert drain(t.app) == 1  # only `kept` ran
    assert revoked.state == "REVOKED" and delayed.state == "REVOKED" and revoked.ready()
    assert kept.get(timeout=1) == 6
    with pytest.raises(TaskRevokedError):
        revoked.get(timeout=1)


def test_unique_key_returns_the_same_id_while_queued(t):
    first = t.add.apply_async((1, 1), unique_key="report:42")
    again = t.add.apply_async((1, 1), unique_key="report:42")
    other = t.add.apply_async((1, 1), unique_key="report:43")
    assert again.id == first.id and other.id != first.id
    assert t.broker.stats("default")[NORMAL].depth == 2
    assert drain(t.app) == 2 and first.get(timeout=1) == 2
    after = t.add.apply_async((1, 1), unique_key="report:42")  # released when it finished
    assert after.id != first.id
    short = t.add.apply_async((0, 0), unique_key="short", unique_for=0.05)
    assert t.add.apply_async((0, 0), unique_key="short").id == short.id
    time.sleep(0.08)
    assert t.add.apply_async((0, 0), unique_key="short").id != short.id  # the TTL ran out


def test_unique_key_is_released_by_failure_and_revoke_too(t):
    failing = t.fail.apply_async(("KeyError",), unique_key="f")
    revoked = t.add.apply_async((1, 1), unique_key="r")
    t.app.control.revoke(revoked.id)
    drain(t.app)
    assert t.fail.apply_async(("KeyError",), unique_key="f").id != failing.id
    assert t.add.apply_async((1, 1), unique_key="r").id != revoked.id


def test_set_priority_moves_a_waiting_task_only(t):
    from fastq._core import decode_message

    first = t.add.delay(1, 1)
    second = t.add.delay(2, 2)
    assert t.app.control.set_priority(second.id, "critical")
    assert t.app.control.set_priority(second.id, 0)  # already there
    assert not t.app.control.set_priority("no-such-id", 0)
    assert [s.depth for s in t.broker.stats("default")] == [1, 0, 1, 0, 0]
    got = t.broker.fetch("c", ["default"], 10, 0)
    assert [(d[1], decode_message(d[3]).id, decode_message(d[3]).priority) for d in got] == [
        (0, second.id, 0), (NORMAL, first.id, NORMAL)]
    assert not t.app.control.set_priority(first.id, "critical")  # delivered: not moved
    delayed = t.add.apply_async((3, 3), countdown=5)
    assert not t.app.control.set_priority(delayed.id, "critical")


# -- the full Broker protocol, run against memory:// and a real Redis alike -------------------
@pytest.fixture(params=["memory", "server", "other-server"])
def broker(request):
    """The same checks on memory:// (fakeredis) and on both kinds of real server (redis-server
    and valkey-server) keep the one implementation honest everywhere it runs."""
    if request.param == "memory":
        b = MemoryBroker(f"memory://{uuid.uuid4().hex}")
    else:
        from fastq.broker.redis import RedisBroker

        request.getfixturevalue("r")  # a flushed session database
        server = request.getfixturevalue("redis_server")
        if request.param == "other-server":
            server = other_server()
            if server is None:
                pytest.skip("only one kind of server on this machine")
            redis.Redis.from_url(server.url).flushall()
        b = RedisBroker(server.url)
    yield b
    b.close()


def _msg(task_id: str, level: int = NORMAL, attempt: int = 0) -> bytes:
    return encode_message(Message(task_id, "add", b"\x92\x92\x01\x02\x80", priority=level,
                                  attempt=attempt))


def _ids(deliveries) -> list[str]:
    from fastq._core import decode_message

    return [decode_message(d[3]).id if d[3] is not None else None for d in deliveries]


def test_stats_count_entries_ever_added_for_rates(broker):
    """``added`` only grows: finished (acked and deleted) entries stay counted (fastq/web rates)."""
    broker.prepare(["q"])
    assert [s.added for s in broker.stats("q")] == [0] * 5
    broker.send_many([("q", 2, _msg(f"m{n}"), 0) for n in range(3)] + [("q", 0, _msg("x", 0), 0)])
    broker.purge("q")
    stats = broker.stats("q")
    assert [(s.depth, s.added) for s in stats] == [(0, 1), (0, 0), (0, 3), (0, 0), (0, 0)]
    assert [s.added for s in broker.stats("never-used")] == [0] * 5


def test_send_many_send_delayed_and_promote(broker):
    broker.prepare(["q"])
    now = int(time.time() * 1000)
    broker.send_many([("q", 2, _msg("a"), 0), ("q", 1, _msg("b", 1), now + 60_000),
                      ("q", 2, _msg("c"), now + 30_000)], atomic=True)
    broker.send_many([("q", 3, _msg("d", 3), now + 45_000)])
    broker.send_delayed("q", 2, _msg("e"), now + 10_000)
    broker.send_delayed("q", 2, _msg("e"), now + 20_000)  # the same member: rescheduled, not doubled
    assert "q" in broker.queues()
    assert [s.depth for s in broker.stats("q")] == [0, 0, 1, 0, 0]  # delayed ones are not in streams
    assert broker.promote("q", now) == (0, now + 20_000)
    assert broker.promote("q", now + 50_000, limit=2) == (2, now + 45_000)  # e and c, by due time
    assert broker.promote("q", now + 50_000) == (1, now + 60_000)
    assert broker.promote("q", now + 60_000) == (1, None)
    assert broker.promote("q", now + 60_000) == (0, None)
    assert broker.promote("never-used", now) == (0, None)
    got = broker.fetch("c", ["q"], 10, 0)
    assert [(d[1], i) for d, i in zip(got, _ids(got), strict=True)] == [
        (1, "b"), (2, "a"), (2, "e"), (2, "c"), (3, "d")]


def test_finish_writes_every_field_in_order(broker):
    broker.prepare(["q"])
    broker.send("q", 2, _msg("t1"))
    broker.send("q", 2, _msg("t2"))
    [d1, d2] = broker.fetch("c", ["q"], 10, 0)
    assert broker.claim_unique("u1", "t1", 60_000) is None
    assert broker.claim_unique("u1", "other", 60_000) == "t1"
    assert broker.claim_unique("u2", "t2", 60_000) is None

    done = Finish()
    done.results += [("t1", b"first"), ("t2", b"only")]
    done.states.append(("t3", b"retrying"))
    done.dead.append(("q", {"m": b"data", "reason": "why", "attempts": 3}))
    done.delayed.append(("q", 1, int(time.time() * 1000) + 60_000, _msg("t2-again", 1, 1)))
    done.releases += [("u1", "t1"), ("u2", "not-the-owner")]
    done.ack(d1[0], d1[2])
    done.ack(d2[0], d2[2])
    broker.finish(done, 60_000)
    assert broker.peek_result("t1") == b"first" and broker.peek_result("t2") == b"only"
    assert broker.peek_state("t3") == b"retrying" and broker.peek_state("t1") is None
    [(_eid, fields)] = broker.dead_letters("q")
    assert fields[b"m"] == b"data" and fields[b"reason"] == b"why" and fields[b"attempts"] == b"3"
    assert broker.promote("q", int(time.time() * 1000) + 61_000)[0] == 1
    assert broker.claim_unique("u1", "new", 60_000) is None  # released by its owner
    assert broker.claim_unique("u2", "new", 60_000) == "t2"  # not released by someone else
    stats = broker.stats("q")
    assert (stats[2].depth, stats[2].pending, stats[1].depth) == (0, 0, 1)

    again = Finish(results=[("t1", b"second")])
    broker.finish(again, 60_000)
    assert broker.peek_result("t1") == b"first"  # a second record is appended, the first wins
    replace = Finish(results=[("t1", b"replaced")], overwrite={"t1"})
    broker.finish(replace, 60_000)
    assert broker.peek_result("t1") == b"replaced"

    broker.finish(Finish(results=[("short", b"x")], states=[("short", b"y")]), 30)
    time.sleep(0.06)
    assert broker.peek_result("short") is None and broker.peek_state("short") is None


def test_unique_keys_expire_and_release_only_for_their_owner(broker):
    assert broker.claim_unique("k", "a", 50) is None
    assert broker.claim_unique("k", "b", 50) == "a"
    broker.release_unique("k", "b")
    assert broker.claim_unique("k", "b", 50) == "a"
    time.sleep(0.08)
    assert broker.claim_unique("k", "b", 5_000) is None
    broker.release_unique("k", "b")
    assert broker.claim_unique("k", "c", 5_000) is None


def test_reclaim_delivery_counts_still_owned_and_entry(broker):
    broker.prepare(["q"])
    for name in ("a", "b", "c"):
        broker.send("q", 2, _msg(name))
    held = broker.fetch("dead-worker", ["q"], 10, 0)
    assert _ids(held) == ["a", "b", "c"]
    assert broker.delivery_counts(held) == [1, 1, 1]
    assert broker.still_owned("dead-worker", held) == held
    assert broker.reclaim("rescuer", ["q"], 10_000, 10) == []  # leases still fresh
    time.sleep(0.05)
    assert broker.entry(held[1][0], held[1][2]) == held[1][3]
    done = Finish()
    done.ack(held[1][0], held[1][2])
    broker.finish(done, 1000)
    assert broker.entry(held[1][0], held[1][2]) is None
    taken = broker.reclaim("rescuer", ["q"], 30, 1)
    assert _ids(taken) == ["a"]
    taken += broker.reclaim("rescuer", ["q"], 30, 10)
    assert _ids(taken) == ["a", "c"]
    assert broker.delivery_counts(taken) == [2, 2]
    assert broker.still_owned("dead-worker", held) == []
    assert broker.still_owned("rescuer", held) == [held[0], held[2]]
    assert broker.delivery_counts(held[1:2]) == [0]
    assert broker.reclaim("third", ["q"], 30, 10) == []  # reclaiming renewed their idle time
    again = broker.fetch("rescuer", ["q"], 10, 0, own_pending=True)
    assert _ids(again) == ["a", "c"]
    assert broker.delivery_counts(again) == [3, 3]  # re-reading the history counts too


def test_renew_keeps_leases_fresh(broker):
    broker.prepare(["q"])
    broker.send("q", 2, _msg("a"))
    broker.send("q", 0, _msg("b", 0))
    held = broker.fetch("w", ["q"], 10, 0)
    time.sleep(0.06)
    assert broker.renew("w", ["q"]) == 2
    assert broker.renew("nobody", ["q"]) == 0
    assert broker.reclaim("other", ["q"], 50, 10) == []
    assert broker.delivery_counts(held) == [1, 1]  # renewing is not a delivery
    time.sleep(0.06)
    assert len(broker.reclaim("other", ["q"], 50, 10)) == 2


def test_hand_back_returns_prefetched_messages_but_the_running_one(broker):
    broker.prepare(["q"])
    for name in ("a", "b", "c"):
        broker.send("q", 2, _msg(name))
    held = broker.fetch("busy", ["q"], 10, 0)
    assert broker.hand_back("busy", ["q"], held[0][2]) == 2
    assert broker.still_owned("busy", held) == held[:1]
    assert broker.entry(held[1][0], held[1][2]) is None  # re-added under a new id
    assert broker.stats("q")[2].depth == 3  # (RedisBroker.stats reports pending as 0: see
    # its XPENDING reply parsing; so the pending list is checked with still_owned instead)
    other = broker.fetch("idle", ["q"], 10, 0)
    assert _ids(other) == ["b", "c"] and broker.delivery_counts(other) == [1, 1]
    assert broker.hand_back("idle", ["q"]) == 2
    assert broker.hand_back("nobody", ["q"]) == 0


def test_revocations_live_set_and_cursor(broker):
    live, cursor = broker.live_revocations()
    assert live == {} and cursor == "0-0"
    assert broker.revocations_since(cursor) == (cursor, [])
    before = time.time()
    broker.revoke(["a", "b"], False, 60)
    broker.revoke(["c"], True, 0.05)
    cursor2, new = broker.revocations_since(cursor)
    assert [(i, term) for i, _until, term in new] == [("a", False), ("b", False), ("c", True)]
    assert all(before + 59 < until < time.time() + 61 for _i, until, _t in new[:2])
    assert broker.revocations_since(cursor2) == (cursor2, [])
    live, cursor3 = broker.live_revocations()
    assert set(live) == {"a", "b", "c"} and cursor3 == cursor2
    time.sleep(0.08)
    live, _ = broker.live_revocations()
    assert set(live) == {"a", "b"}  # c's revocation ran out
    broker.revoke(["d"], False, 60)
    cursor4, new = broker.revocations_since(cursor2)
    assert [i for i, _u, _t in new] == ["d"] and cursor4 > cursor2


def test_set_priority_on_both_brokers(broker):
    broker.prepare(["q"])
    broker.send("q", 2, _msg("a"))
    broker.send("q", 2, _msg("b"))
    assert broker.set_priority("q", "b", 1)
    assert not broker.set_priority("q", "zzz", 1)
    got = broker.fetch("c", ["q"], 10, 0)
    assert [(d[1], d[3][3]) for d in got] == [(1, 1), (2, 2)]  # level byte of the envelope too
    assert _ids(got) == ["b", "a"]
    assert not broker.set_priority("q", "a", 0)  # delivered


def test_trim_and_purge(broker):
    broker.prepare(["q"])
    assert broker.trim("q") == 0
    broker.send("q", 2, _msg("a"))
    assert broker.purge("q") == 1
    assert broker.fetch("c", ["q"], 10, 0) == []


# -- rate limits ------------------------------------------------------------------------------
def test_rate_limiter_same_cases_on_both_brokers(broker):
    """rate_acquire.lua through RateLimiter: the same answers from fakeredis and from Redis."""
    from fastq.ratelimit import RateLimiter, parse_rate

    limiter = RateLimiter(broker)
    key = keys.rate_task("t.wait")
    assert limiter.acquire(key, 10, now_ms=1_000) == (1, 100)
    assert limiter.acquire(key, 10, now_ms=1_000) == (0, 100)
    assert limiter.acquire(key, 10, now_ms=1_050) == (0, 50)
    assert limiter.acquire(key, 10, now_ms=1_099) == (0, 1)
    assert RateLimiter(broker).acquire(key, 10, now_ms=1_100) == (1, 100)  # buckets are shared
    assert limiter.acquire(key, 10, now_ms=5_000) == (1, 100)
    assert limiter.acquire(key, 10, now_ms=4_000) == (0, 100)
    bursty = keys.rate_queue("bursty")
    assert limiter.acquire(bursty, 100, n=80, now_ms=0, burst_s=0.5) == (50, 10)
    assert limiter.acquire(bursty, 100, n=2, now_ms=30, burst_s=0.5) == (2, 0)
    assert limiter.acquire(keys.rate_task("slow"), parse_rate("30/m"), now_ms=0) == (1, 2000)
    assert limiter.acquire("free", None, n=7) == (7, 0)
    with pytest.raises(ValueError):
        limiter.acquire("k", 0)
    with pytest.raises(ValueError):
        limiter.acquire("k", 10, n=0)
    with pytest.raises(ValueError):
        RateLimiter(broker, burst_s=-1)


def test_memory_rate_limiter_by_the_wall_clock():
    from fastq.ratelimit import RateLimiter

    limiter = RateLimiter(MemoryBroker())
    got, end = 0, time.time() + 0.5
    while time.time() < end:
        granted, wait_ms = limiter.acquire("k", 100)
        got += granted
        if not granted:
            time.sleep(min(wait_ms / 1000, max(end - time.time(), 0)))
    assert 45 <= got <= 70  # 100/s for 0.5 s plus a burst of 10


def test_rate_limited_task_in_memory():
    ns = make_app()
    ran: list[float] = []

    @ns.app.task(name="limited", rate_limit="20/s")
    def limited():
        ran.append(time.monotonic())

    for _ in range(10):
        limited.delay()
    assert drain(ns.app, timeout=5) == 10
    # capacity 2, then one every 50 ms: 8 x 50 ms at the least
    assert ran[-1] - ran[0] >= 0.35


def test_map_sends_with_the_tasks_own_defaults_and_fresh_uuid4_ids():
    import uuid as uuid_mod

    from fastq import keys
    from fastq._core import decode_message

    ns = make_app()

    @ns.app.task(name="tagged", queue="side", priority="high", expires=60, soft_time_limit=2)
    def tagged(x):
        return x

    results = tagged.map(range(5))
    ids = [res.id for res in results]
    assert len(set(ids)) == 5 and all(uuid_mod.UUID(i).version == 4 for i in ids)
    assert all(str(uuid_mod.UUID(i)) == i for i in ids)  # canonical form
    sent = [decode_message(d[3]) for d in ns.broker.fetch("peek", ["side"], 10, 0)]
    assert [m.id for m in sent] == ids
    assert {(m.priority, m.soft_limit_ms) for m in sent} == {(keys.PRIORITY_NAMES.index("high"), 2000)}
    assert all(m.expires_ms > time.time() * 1000 + 50_000 for m in sent)
