"""Reliability of task execution with real workers and real Redis (tests/apps/reliable.py):
retry policies and their timing, the dead-letter queue, time limits, revoke, countdown / ETA /
expires, bad input, priorities, uniqueness and atomic batches."""
from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta

import pytest
import redis

from fastq import keys, states
from fastq._core import decode_message, unpack_body
from fastq.dlq import DeadLetters
from fastq.errors import (
    EncodeError,
    SoftTimeLimitExceeded,
    TaskRevokedError,
    TimeLimitExceeded,
)
from tests.apps.reliable import starts_key
from tests.conftest import app_fixture, wait_for, worker_fixture

TOLERANCE = 0.05  # retry gaps: the mover ticks every 20 ms, plus scheduling noise
DELAYED = keys.delayed("default")


rapp = app_fixture("tests.apps.reliable")
worker = worker_fixture("tests.apps.reliable", 1, "rapp")


def starts(r: redis.Redis, task_id: str) -> list[tuple[int, float]]:
    """(attempt, start time) of every run of ``task_id``, as the task recorded them."""
    out = []
    for raw in r.lrange(starts_key(task_id), 0, -1):
        attempt, _, at = raw.decode().partition(":")
        out.append((int(attempt), float(at)))
    return out


def gaps(r: redis.Redis, task_id: str) -> list[float]:
    times = [at for _, at in starts(r, task_id)]
    return [b - a for a, b in zip(times, times[1:], strict=False)]


def waiting(r: redis.Redis, queue: str = "default") -> int:
    """Messages in the queue's ready streams (all levels)."""
    return sum(r.xlen(k) for k in keys.streams(queue))


def dead_letter_of(app, task_id: str):
    found = wait_for(lambda: DeadLetters(app).find(task_id), 5, message=f"dead letter {task_id}")
    assert len(found) == 1
    return found[0]


def revoked_error(res, timeout: float = 10) -> TaskRevokedError:
    with pytest.raises(TaskRevokedError) as info:
        res.get(timeout=timeout)
    return info.value


# -- 1. retry policies -------------------------------------------------------------------------
@pytest.mark.parametrize(("task_name", "delays"), [
    ("flaky_schedule", [0.2, 0.5, 0.3]),  # retry_schedule
    ("flaky_fixed", [0.25, 0.25]),  # default_retry_delay
    ("flaky_backoff", [0.1, 0.2, 0.3]),  # retry_backoff=0.1, no jitter, capped at 0.3
])
def test_retry_policy_delays_state_failure_and_dead_letter(rapp, worker, r, task_name, delays):
    from tests.apps import reliable

    task = getattr(reliable, task_name)
    worker()
    res = task.delay()
    attempts = len(delays) + 1
    for seen in range(1, attempts):  # between attempts the state is RETRY
        wait_for(lambda n=seen: r.llen(starts_key(res.id)) >= n, 5, message=f"attempt {seen}")
        wait_for(lambda: res.state == states.RETRY, 1, message="state RETRY")
    with pytest.raises(ConnectionError, match=f"attempt {attempts - 1} failed"):
        res.get(timeout=10)
    assert res.state == states.FAILURE
    assert [a for a, _ in starts(r, res.id)] == list(range(attempts))
    for gap, delay in zip(gaps(r, res.id), delays, strict=True):
        assert delay - 0.005 <= gap <= delay + TOLERANCE, (gaps(r, res.id), delays)
    dead = dead_letter_of(rapp, res.id)
    assert dead.task == task.name
    assert dead.attempts == task.retry_policy.max_retries + 1 == attempts
    assert [e["attempt"] for e in dead.errors] == list(range(attempts))
    assert {e["type"] for e in dead.errors} == {"ConnectionError"}
    assert [e["message"] for e in dead.errors] == [f"attempt {n} failed" for n in range(attempts)]
    assert dead.reason.startswith(f"failed after {attempts} attempts: ConnectionError")


def test_self_retry_with_countdown_succeeds_on_the_third_attempt(rapp, worker, r):
    from tests.apps.reliable import succeeds_on_third

    worker()
    res = succeeds_on_third.delay()
    assert res.get(timeout=10) == "done on attempt 2"
    assert res.state == states.SUCCESS
    assert [a for a, _ in starts(r, res.id)] == [0, 1, 2]
    assert all(0.1 - 0.005 <= g <= 0.1 + TOLERANCE for g in gaps(r, res.id)), gaps(r, res.id)
    assert DeadLetters(rapp).count() == 0


def test_self_retry_after_max_retries_raises_the_original_exception(rapp, worker, r):
    from tests.apps.reliable import retries_forever

    worker()
    res = retries_forever.delay()
    with pytest.raises(LookupError, match="still missing at attempt 2"):
        res.get(timeout=10)
    assert res.state == states.FAILURE
    assert [a for a, _ in starts(r, res.id)] == [0, 1, 2]  # max_retries=2
    dead = dead_letter_of(rapp, res.id)
    assert dead.attempts == 3
    assert [(e["attempt"], e["type"]) for e in dead.errors] == \
        [(0, "LookupError"), (1, "LookupError"), (2, "LookupError")]


# -- 2. dead-letter requeue --------------------------------------------------------------------
def test_requeue_from_the_dlq_runs_the_task_again_with_the_same_id(rapp, worker, r):
    from tests.apps.reliable import gated

    w = worker()
    res = gated.delay()
    with pytest.raises(ConnectionError, match="gate closed"):
        res.get(timeout=10)
    dead = dead_letter_of(rapp, res.id)
    assert dead.attempts == 2
    assert w.stop() == 0  # requeue while no worker runs: the task is waiting again
    r.set("gate", 1)
    assert DeadLetters(rapp).requeue(res.id) == 1
    assert DeadLetters(rapp).count() == 0
    assert waiting(r) == 1
    again = rapp.AsyncResult(res.id)
    assert again.state == states.PENDING  # the old FAILURE no longer answers for it
    worker()
    assert again.get(timeout=10) == "through the gate"
    assert rapp.AsyncResult(res.id).state == states.SUCCESS
    assert [a for a, _ in starts(r, res.id)] == [0, 1, 2]  # the third run is attempt 2


def test_requeued_task_that_fails_again_gets_one_run_and_returns_to_the_dlq(rapp, worker, r):
    from tests.apps.reliable import gated

    worker()
    res = gated.delay()
    with pytest.raises(ConnectionError):
        res.get(timeout=10)
    assert dead_letter_of(rapp, res.id).attempts == 2
    assert DeadLetters(rapp).requeue(res.id) == 1
    wait_for(lambda: DeadLetters(rapp).count() == 1, 10, message="back in the DLQ")
    dead = dead_letter_of(rapp, res.id)
    assert dead.attempts == 3  # one more run, every error kept
    assert [e["attempt"] for e in dead.errors] == [0, 1, 2]
    assert [a for a, _ in starts(r, res.id)] == [0, 1, 2]
    assert rapp.AsyncResult(res.id).state == states.FAILURE


# -- 3. time limits ----------------------------------------------------------------------------
def test_soft_time_limits_sync_and_async(rapp, worker, r):
    from tests.apps.reliable import soft_async, soft_caught, soft_uncaught

    worker(concurrency=2)
    started = time.monotonic()
    caught, uncaught, in_async = soft_caught.delay(), soft_uncaught.delay(), soft_async.delay()
    assert caught.get(timeout=10) == "cleaned up"
    for res in (uncaught, in_async):
        with pytest.raises(SoftTimeLimitExceeded):
            res.get(timeout=10)
        assert res.state == states.FAILURE
    assert time.monotonic() - started < 3  # interrupted at 0.3 s, not after their 5 s sleeps


def test_hard_time_limit_kills_replaces_the_child_and_the_worker_keeps_serving(rapp, worker, r):
    from tests.apps.reliable import echo, hard_sleeper

    w = worker()
    before = w.child_pids(r)[0]
    started = time.monotonic()
    res = hard_sleeper.delay()
    with pytest.raises(TimeLimitExceeded, match=r"hard time limit \(1 s\) exceeded"):
        res.get(timeout=10)
    elapsed = time.monotonic() - started
    assert 1.0 <= elapsed < 4, elapsed
    assert res.state == states.FAILURE
    wait_for(lambda: w.child_pids(r).get(0) not in (None, before), 10, message="a new child")
    assert echo.delay("still serving").get(timeout=10) == "still serving"
    assert w.proc.poll() is None
    assert len(starts(r, res.id)) == 1  # killed once, not re-run by the replacement child
    assert r.xpending(keys.stream("default", 2), keys.GROUP)["pending"] == 0


def test_hard_time_limit_is_retried_when_the_policy_says_so(rapp, worker, r):
    from tests.apps.reliable import hard_then_quick

    worker()
    res = hard_then_quick.delay()
    assert res.get(timeout=15) == "ok on attempt 1"
    assert [a for a, _ in starts(r, res.id)] == [0, 1]
    (gap,) = gaps(r, res.id)
    assert 0.6 - 0.005 <= gap < 1.5, gap  # 0.5 s limit + 0.1 s retry delay (+ kill and restart)


# -- 4. revoke ---------------------------------------------------------------------------------
def test_task_revoked_while_queued_never_runs(rapp, worker, r):
    from tests.apps.reliable import mark

    res = mark.delay("revoked")
    res.revoke()
    worker()
    error = revoked_error(res)
    assert str(error) == "revoked"
    assert res.state == states.REVOKED
    assert mark.delay("next").get(timeout=10) == "next"
    assert not r.hexists("ran", "revoked")
    assert r.llen(starts_key(res.id)) == 0


def test_delayed_task_revoked_never_runs(rapp, worker, r):
    from tests.apps.reliable import mark

    worker()
    time.sleep(0.3)  # the child is now blocked in its fetch
    res = mark.apply_async(("delayed",), countdown=0.5)
    assert r.zcard(DELAYED) == 1
    rapp.control.revoke(res.id)
    assert str(revoked_error(res)) == "revoked"
    assert res.state == states.REVOKED
    assert not r.hexists("ran", "delayed")
    assert r.zcard(DELAYED) == 0 and waiting(r) == 0


def test_revoke_terminate_stops_a_running_task_and_the_worker_keeps_serving(rapp, worker, r):
    from tests.apps.reliable import mark, sleeper

    w = worker()
    before = w.child_pids(r)[0]
    res = sleeper.delay("long", 30)
    wait_for(lambda: r.llen(starts_key(res.id)) == 1, 10, message="the task to start")
    started = time.monotonic()
    res.revoke(terminate=True)
    assert str(revoked_error(res)) == "revoked (terminated)"
    assert time.monotonic() - started < 2
    assert res.state == states.REVOKED
    wait_for(lambda: w.child_pids(r).get(0) not in (None, before), 10, message="a new child")
    assert mark.delay("after").get(timeout=10) == "after"
    assert not r.hexists("ran", "long")
    assert r.llen(starts_key(res.id)) == 1  # not re-run by the replacement child


# -- 5. countdown, eta, expires ----------------------------------------------------------------
def test_countdown_waits_in_the_delayed_set_then_runs_on_time(rapp, worker, r):
    from tests.apps.reliable import mark

    worker()
    sent = time.time()
    res = mark.apply_async(("later",), countdown=1.0)
    for _ in range(2):
        assert r.zcard(DELAYED) == 1 and waiting(r) == 0
        assert res.state == states.PENDING
        time.sleep(0.4)
    assert res.get(timeout=5) == "later"
    ((_, at),) = starts(r, res.id)
    assert 1.0 - 0.005 <= at - sent <= 1.1, at - sent
    assert r.zcard(DELAYED) == 0


def test_eta_datetime_future_and_past(rapp, worker, r):
    from tests.apps.reliable import mark

    worker()
    sent = time.time()
    future = mark.apply_async(("eta",), eta=datetime.now(UTC) + timedelta(seconds=0.5))
    assert r.zcard(DELAYED) == 1
    past = mark.apply_async(("past",), eta=datetime.now(UTC) - timedelta(hours=1))
    assert r.zcard(DELAYED) == 1  # a past eta goes straight to the stream
    assert past.get(timeout=5) == "past"
    ((_, at),) = starts(r, past.id)
    assert at - sent < 0.3
    assert future.get(timeout=5) == "eta"
    ((_, at),) = starts(r, future.id)
    assert 0.5 - 0.005 <= at - sent <= 0.6, at - sent


def test_expired_tasks_are_not_run_and_revoked(rapp, worker, r):
    from tests.apps.reliable import mark

    stale = mark.apply_async(("stale",), expires=datetime.now(UTC) - timedelta(seconds=1))
    worker()
    # expires=0.1 s from now, but delayed by 0.3 s: expired by the time it is due
    late = mark.apply_async(("late",), countdown=0.3, expires=0.1)
    for res in (stale, late):
        assert str(revoked_error(res)) == "expired"
        assert res.state == states.REVOKED
    assert r.hlen("ran") == 0


def test_negative_countdown_is_refused_at_send(rapp, r):
    from tests.apps.reliable import mark

    with pytest.raises(ValueError, match="countdown must be >= 0"):
        mark.apply_async(("never",), countdown=-1)
    with pytest.raises(ValueError, match="expires must be >= 0"):
        mark.apply_async(("never",), expires=-5)
    assert r.zcard(DELAYED) == 0 and waiting(r) == 0


# -- 6. bad input ------------------------------------------------------------------------------
def test_wrong_argument_count_fails_with_type_error(rapp, worker, r):
    from tests.apps.reliable import add

    worker()
    res = add.delay(1)
    with pytest.raises(TypeError, match="missing 1 required positional argument"):
        res.get(timeout=10)
    assert res.state == states.FAILURE
    assert add.delay(2, 3).get(timeout=10) == 5


def test_huge_payload_is_refused_at_send_and_nothing_is_sent(rapp, worker, r):
    from tests.apps.reliable import echo

    w = worker()
    payload = os.urandom(100 * 1024 * 1024)  # incompressible: lz4 cannot shrink it under the limit
    with pytest.raises(EncodeError) as info:
        echo.apply_async((payload,), unique_key="huge")
    message = str(info.value)
    assert "tests.apps.reliable.echo" in message and "max_message_bytes" in message
    assert "pass a reference" in message
    del payload
    assert waiting(r) == 0 and r.zcard(DELAYED) == 0
    assert not r.exists(keys.unique("huge"))  # the uniqueness claim is given back
    assert echo.delay("small").get(timeout=10) == "small"
    assert w.proc.poll() is None


def test_unknown_priority_is_a_value_error(rapp, r):
    from tests.apps.reliable import echo

    for bad in ("urgent", 5, -1, True):
        with pytest.raises(ValueError, match="unknown priority"):
            echo.apply_async((1,), priority=bad)
    with pytest.raises(ValueError, match="unknown priority 'urgent'"):
        rapp.task(name="never.registered", priority="urgent")(lambda: None)
    assert "never.registered" not in rapp.tasks
    assert waiting(r) == 0


# -- 7. priorities -----------------------------------------------------------------------------
def test_set_priority_moves_a_waiting_task_ahead(rapp, worker, r):
    from tests.apps.reliable import log_order

    with rapp.batch():
        for i in range(20):
            log_order.apply_async((f"n{i}",))
        target = log_order.apply_async(("moved",), priority="batch")
    assert r.xlen(keys.stream("default", 4)) == 1
    assert rapp.control.set_priority(target.id, "critical") is True
    assert r.xlen(keys.stream("default", 4)) == 0
    ((_, fields),) = r.xrange(keys.stream("default", 0))
    assert decode_message(fields[b"m"]).priority == 0
    assert rapp.control.set_priority("no-such-task", "critical") is False
    worker()
    wait_for(lambda: r.llen("order") == 21, 10, message="all 21 tasks")
    assert r.lindex("order", 0) == b"moved"


def test_celery_integer_priorities_map_onto_the_five_levels(rapp, worker, r):
    from fastq.compat import Celery

    capp = Celery("compat", task_default_queue="default")  # same broker (FASTQ_BROKER_URL); the worker knows the task by name
    log_order = capp.task(name="tests.apps.reliable.log_order")(lambda tag: None)
    with capp.batch():
        for prio in range(9, -1, -1):
            log_order.apply_async((f"p{prio}",), priority=prio)
    for level in range(keys.LEVELS):  # 0-1 critical, 2-3 high, 4-5 normal, 6-7 low, 8-9 batch
        messages = [decode_message(f[b"m"]) for _, f in r.xrange(keys.stream("default", level))]
        tags = {unpack_body(m.body, m.codec, m.compressed, False)[0][0] for m in messages}
        assert tags == {f"p{2 * level}", f"p{2 * level + 1}"}, (level, tags)
        assert {m.priority for m in messages} == {level}
    with pytest.raises(ValueError, match="Celery priorities are 0"):
        log_order.apply_async(("p10",), priority=10)
    capp.close()
    worker()
    wait_for(lambda: r.llen("order") == 10, 10, message="all 10 tasks")
    order = [x.decode() for x in r.lrange("order", 0, -1)]
    # weighted fair (16:8:4:2:1, smooth round robin): critical first, batch among the last
    assert order[0] in ("p0", "p1") and {"p0", "p1"} <= set(order[:3]), order
    assert {"p8", "p9"} <= set(order[-3:]), order


def test_batch_level_is_not_starved_by_a_flood_of_critical_tasks(rapp, worker, r):
    from tests.apps.reliable import log_order

    with rapp.batch():
        for i in range(3000):
            log_order.apply_async((f"c{i}",), priority="critical")
        for i in range(100):
            log_order.apply_async((f"b{i}",), priority="batch")
    worker()
    wait_for(lambda: r.llen("order") >= 500, 30, message="500 tasks run")
    first = [x.decode()[0] for x in r.lrange("order", 0, 499)]
    assert first.count("b") >= 10, first.count("b")
    assert first[:100].count("c") >= 80  # critical still dominates
    assert r.xlen(keys.stream("default", 0)) > 0  # the flood was still going on


def test_two_flooded_levels_share_each_read_by_weight(rapp, worker, r):
    from tests.apps.reliable import log_order

    with rapp.batch():
        for i in range(2000):
            log_order.apply_async((f"c{i}",), priority="critical")
            log_order.apply_async((f"b{i}",), priority="batch")
    worker(env={"FASTQ_PRIORITY_AGEING_MS": "0", "FASTQ_PREFETCH": "20"})
    wait_for(lambda: r.llen("order") >= 1000, 30, message="1000 tasks run")
    # The first read takes 20 of each level; after it, reads are shared 16:1 (about 57 of 960).
    # Reading `prefetch` of each level every time would make it half and half.
    later = [x.decode()[0] for x in r.lrange("order", 40, 999)]
    assert 25 <= later.count("b") <= 120, later.count("b")


# -- 8. uniqueness and atomic batches ----------------------------------------------------------
def test_unique_key_returns_the_queued_task_until_it_finishes(rapp, worker, r):
    from tests.apps.reliable import echo

    first = echo.apply_async(("one",), unique_key="report:42")
    second = echo.apply_async(("two",), unique_key="report:42")
    assert second.id == first.id
    assert waiting(r) == 1
    worker()
    assert first.get(timeout=10) == "one"
    third = echo.apply_async(("three",), unique_key="report:42")
    assert third.id != first.id
    assert third.get(timeout=10) == "three"


def test_atomic_batch_sends_all_or_nothing(rapp, r):
    from tests.apps.reliable import echo

    with rapp.batch(atomic=True):
        echo.apply_async((1,))
        echo.apply_async((2,), queue="other")
        echo.apply_async((3,), countdown=60)
    assert r.xlen(keys.stream("default", 2)) == 1 and r.xlen(keys.stream("other", 2)) == 1
    assert r.zcard(DELAYED) == 1
    r.flushall()

    r.set(keys.stream("broken", 2), "not a stream")  # makes the XADD to queue "broken" fail
    with pytest.raises(redis.ResponseError, match="WRONGTYPE .* nothing of the atomic batch"):
        with rapp.batch(atomic=True):
            echo.apply_async((1,))
            echo.apply_async((3,), countdown=60)
            echo.apply_async((2,), queue="broken")
            echo.apply_async((4,), queue="other", priority="high")
            claimed = echo.apply_async((5,), unique_key="batch:1")
    assert waiting(r) == 0 and waiting(r, "other") == 0
    assert r.zcard(DELAYED) == 0
    assert r.get(keys.stream("broken", 2)) == b"not a stream"
    # the unsent task gave its uniqueness key back: the next send is a real, new task
    assert not r.exists(keys.unique("batch:1"))
    assert echo.apply_async((6,), unique_key="batch:1").id != claimed.id
    assert waiting(r) == 1


def test_batch_block_that_raises_sends_nothing_and_keeps_no_unique_key(rapp, r):
    from tests.apps.reliable import echo

    with pytest.raises(RuntimeError, match="changed my mind"):
        with rapp.batch():
            echo.apply_async((1,))
            echo.apply_async((2,), unique_key="batch:2")
            raise RuntimeError("changed my mind")
    assert waiting(r) == 0
    assert not r.exists(keys.unique("batch:2"))


def test_batch_send_retried_after_a_lost_connection_sends_everything(rapp, r, monkeypatch):
    """redis-py empties a pipeline that failed (after its own retries): the producer's retry must
    build it again, not re-execute an empty one and report success."""
    from redis.backoff import NoBackoff
    from redis.client import Pipeline

    from tests.apps.reliable import echo

    echo.delay(-1)  # the broker has worked before (else a first failure fails fast, no retry)
    pool = rapp.broker.client.connection_pool
    conn = pool.get_connection()  # the one connection the pipeline will use
    pool.release(conn)
    monkeypatch.setattr(conn.retry, "_retries", 2)  # redis-py's own retries: make them quick
    monkeypatch.setattr(conn.retry, "_backoff", NoBackoff())
    real = Pipeline._execute_pipeline
    failures = {"left": 4}  # more than redis-py's own retries

    def flaky(self, *args, **kwargs):
        if failures["left"]:
            failures["left"] -= 1
            raise redis.ConnectionError("simulated: connection lost mid-pipeline")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Pipeline, "_execute_pipeline", flaky)
    echo.map(range(5))
    monkeypatch.undo()
    assert failures["left"] == 0
    assert waiting(r) == 6
