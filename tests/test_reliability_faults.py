"""Faults with real worker processes and real Redis (tasks in tests/apps/faults.py): a whole worker
SIGKILLed mid-run, leases far shorter than a task or a countdown, warm shutdown, a global rate limit
across two workers, a Redis restart under load, hostage tasks behind a long one, and the watchdog."""
from __future__ import annotations

import os
import shutil
import signal
import threading
import time

import redis

from fastq import keys, states
from fastq._core import decode_message, unpack_value
from tests.apps.faults import release_key
from tests.conftest import RedisServer, app_fixture, wait_for, worker_fixture

STREAM = keys.stream("default", 2)  # every task here runs at the default priority
PREFETCH = 100  # fastq's default: messages a child fetches per stream and round
# Recovery of a dead worker's messages by lease expiry, quickly.
FAST_LEASE = {"FASTQ_LEASE_MS": "2000", "FASTQ_RECLAIM_INTERVAL_S": "0.5"}


fapp = app_fixture("tests.apps.faults")
worker = worker_fixture("tests.apps.faults", 2, "fapp")


# -- helpers -----------------------------------------------------------------------------------
def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def _children_of(parent: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        if int(stat[stat.rindex(")") + 2:].split()[1]) == parent:
            out.append(int(entry))
    return out


def kill_whole_worker(w) -> list[int]:
    """SIGKILL the supervisor and all its children together: nothing gets to finish, ack or hand
    back anything. (Frozen first, so the supervisor cannot restart a child it sees die.)"""
    supervisor = w.proc.pid
    children = _children_of(supervisor)
    assert len(children) == w.concurrency, children
    for pid in (supervisor, *children):
        os.kill(pid, signal.SIGSTOP)
    for pid in (supervisor, *children):
        os.kill(pid, signal.SIGKILL)
    w.proc.wait(10)
    wait_for(lambda: not any(_alive(pid) for pid in children), 10,
             message="the killed worker's children to be gone")
    return children


def result_lengths(r: redis.Redis, ids: list[str]) -> list[int]:
    """How many records each task's result list holds."""
    pipe = r.pipeline(transaction=False)
    for task_id in ids:
        pipe.llen(keys.result(task_id))
    return pipe.execute()


def result_records(r: redis.Redis, ids: list[str]) -> list[list | None]:
    pipe = r.pipeline(transaction=False)
    for task_id in ids:
        pipe.lindex(keys.result(task_id), 0)
    return [unpack_value(raw) if raw else None for raw in pipe.execute()]


def all_finished(r: redis.Redis, ids: list[str]) -> bool:
    return all(result_lengths(r, ids))


def pending_task_ids(r: redis.Redis) -> dict[str, str]:
    """task id -> consumer, of every delivered but unacknowledged message."""
    out = {}
    for row in r.xpending_range(STREAM, keys.GROUP, "-", "+", 100_000):
        found = r.xrange(STREAM, row["message_id"], row["message_id"])
        if found:
            out[decode_message(found[0][1][b"m"]).id] = row["consumer"].decode()
    return out


# -- 1. a whole worker SIGKILLed mid-run -------------------------------------------------------
def test_sigkill_of_a_whole_worker_mid_run_is_recovered_by_lease_expiry(fapp, worker, r):
    from tests.apps.faults import work

    total, children = 5000, 2
    doomed = worker(concurrency=children, name="doomed", env=FAST_LEASE)
    ids = [res.id for res in work.starmap([(i, 0.001) for i in range(total)])]
    wait_for(lambda: r.hlen("effects") >= 1500, 60, message="the run to be under way")
    kill_whole_worker(doomed)
    ran_before = r.hlen("effects")
    in_flight = pending_task_ids(r)
    assert 0 < ran_before < total, "the kill must land in the middle of the run"
    assert {c.split(":")[0] for c in in_flight.values()} <= {"doomed"}
    assert len(in_flight) <= PREFETCH * children

    # Another name: nothing is recovered as "own pending"; only lease expiry + XAUTOCLAIM helps.
    rescuer = worker(concurrency=2, name="rescuer", env=FAST_LEASE)
    wait_for(lambda: all_finished(r, ids), 60, message="every task to finish")

    assert result_lengths(r, ids) == [1] * total  # exactly one record each, re-runs overwrite
    records = result_records(r, ids)
    assert {rec[0] for rec in records} == {states.SUCCESS}
    assert [rec[1] for rec in records] == list(range(total))
    effects = {int(k): int(v) for k, v in r.hgetall("effects").items()}
    assert set(effects) == set(range(total))  # every side effect at least once
    twice = sorted(n for n, runs in effects.items() if runs > 1)
    print(f"\nSIGKILL mid-run: {ran_before} of {total} ran before the kill, {len(in_flight)} in "
          f"flight (bound prefetch x children = {PREFETCH * children}), {len(twice)} ran twice")
    assert max(effects.values()) <= 2
    number = {task_id: n for n, task_id in enumerate(ids)}
    assert set(twice) <= {number[task_id] for task_id in in_flight}  # only in-flight re-ran
    assert len(twice) <= PREFETCH * children
    assert "reclaimed messages whose lease expired" in rescuer.output()
    assert wait_for(lambda: r.xpending(STREAM, keys.GROUP)["pending"] == 0, 10)


# -- 2. leases, prefetched messages of a dead worker, warm shutdown ----------------------------
def test_lease_far_shorter_than_a_task_and_a_countdown_runs_each_once(fapp, worker, r):
    from tests.apps.faults import hold, stamp

    lease = {"FASTQ_LEASE_MS": "5000", "FASTQ_RECLAIM_INTERVAL_S": "0.5"}
    busy = worker(concurrency=1, name="busy", env=lease)
    sent = time.time()
    long = hold.apply_async(("long", 40))  # 8 leases long
    later = stamp.apply_async(("later",), countdown=60)  # 12 leases away
    wait_for(lambda: r.llen("starts:long") == 1, 10, message="the long task to start")
    idle = worker(concurrency=1, name="idle", env=lease)  # reclaims every 0.5 s, finds nothing

    longest_idle = 0
    while not r.exists(keys.result(long.id)):
        rows = r.xpending_range(STREAM, keys.GROUP, "-", "+", 10)
        longest_idle = max([longest_idle, *(row["time_since_delivered"] for row in rows)])
        assert time.time() - sent < 50, "the long task should be done after 40 s"
        time.sleep(0.25)
    assert long.get(timeout=1) == "long"
    assert later.get(timeout=30) == "later"

    print(f"\nlease 5 s: longest idle time of the 40 s task's entry {longest_idle} ms")
    assert longest_idle < 5000  # the supervisor renewed the lease all along
    assert r.hgetall("ran") == {b"long": b"1", b"later": b"1"}
    assert r.llen("starts:long") == 1 and r.llen("starts:later") == 1
    assert float(r.lindex("starts:later", 0)) >= sent + 60 - 0.05
    assert result_lengths(r, [long.id, later.id]) == [1, 1]
    for w in (busy, idle):
        assert "reclaimed messages whose lease expired" not in w.output()
    assert r.xpending(STREAM, keys.GROUP)["pending"] == 0


def test_a_prefetched_batch_longer_than_the_lease_keeps_all_its_leases(fapp, worker, r):
    from tests.apps.faults import work

    lease = {"FASTQ_LEASE_MS": "1500", "FASTQ_RECLAIM_INTERVAL_S": "0.2"}
    results = work.starmap([(i, 0.25) for i in range(14)])  # one batch of 3.5 s: > 2 leases
    batcher = worker(concurrency=1, name="batcher", env=lease)
    wait_for(lambda: r.hlen("effects") >= 1, 10, message="the batch to start")
    assert len(pending_task_ids(r)) >= 12  # all prefetched by the one child
    thief = worker(concurrency=1, name="thief", env=lease)  # would reclaim an expired lease
    assert sorted(res.get(timeout=20) for res in results) == list(range(14))
    assert {int(v) for v in r.hgetall("effects").values()} == {1}  # renewed, never reclaimed
    assert "reclaimed messages whose lease expired" not in thief.output() + batcher.output()


def test_prefetched_unstarted_messages_of_a_killed_worker_come_back(fapp, worker, r):
    from tests.apps.faults import hold, work

    long = hold.apply_async(("long", 30))
    shorts = work.map(range(20))
    # No hand-back: the 20 short ones stay prefetched behind the long one until the kill.
    hoarder = worker(concurrency=1, name="hoarder",
                     env={**FAST_LEASE, "FASTQ_RELEASE_AFTER_MS": "600000"})
    wait_for(lambda: r.llen("starts:long") == 1, 10, message="the long task to start")
    held = pending_task_ids(r)
    assert set(held) == {long.id, *(res.id for res in shorts)}
    assert set(held.values()) == {"hoarder:0"}
    kill_whole_worker(hoarder)
    assert r.hlen("effects") == 0  # none of the prefetched ones had started

    r.set(release_key("long"), 1)  # its re-run returns at once
    worker(concurrency=1, name="heir", env=FAST_LEASE)
    assert sorted(res.get(timeout=20) for res in shorts) == list(range(20))
    assert long.get(timeout=20) == "long"
    assert r.llen("starts:long") == 2  # started, killed, run again: at least once
    assert {int(v) for v in r.hgetall("effects").values()} == {1}
    assert result_lengths(r, [long.id, *(res.id for res in shorts)]) == [1] * 21


def test_warm_shutdown_acks_every_task_that_finished(fapp, worker, r):
    from tests.apps.faults import work

    total = 600
    w = worker(concurrency=2, name="warm")
    ids = [res.id for res in work.starmap([(i, 0.01) for i in range(total)])]
    wait_for(lambda: r.hlen("effects") >= 50, 20, message="the run to be under way")
    assert w.stop(signal.SIGTERM) == 0
    assert "warm shutdown" in w.output()

    ran = {ids[int(n)] for n in r.hgetall("effects")}
    finished = {task_id for task_id, n in zip(ids, result_lengths(r, ids), strict=True) if n}
    assert 0 < len(finished) < total
    assert ran == finished  # whatever ran before exit stored its result
    pending = pending_task_ids(r)
    print(f"\nwarm shutdown: {len(finished)} finished, {len(pending)} left pending")
    assert not set(pending) & finished  # none of the finished ones is left unacknowledged
    assert r.xpending(STREAM, keys.GROUP)["pending"] == 0
    assert r.xlen(STREAM) == total - len(finished)  # finished ones are gone from the stream


# -- 3. a global rate limit across two workers -------------------------------------------------
def test_rate_limit_holds_across_two_workers_and_blocks_nothing_else(fapp, worker, r):
    from tests.apps.faults import limited, quick

    rate, window = 50.0, 10.0
    worker(concurrency=2, name="rate-a")
    worker(concurrency=2, name="rate-b")
    total = int(rate * (window + 3))
    limited.map(range(total))
    wait_for(lambda: r.llen("limited:starts") >= rate, 10, message="limited tasks to start")

    time.sleep(2)  # well into the run: the queue is full of deferred limited tasks
    latencies = []
    for i in range(10):
        sent = time.monotonic()
        assert quick.delay(i).get(timeout=5) == i
        latencies.append(time.monotonic() - sent)
        time.sleep(0.1)
    assert r.llen("limited:starts") < total - rate  # the limited run was still going meanwhile

    wait_for(lambda: r.llen("limited:starts") >= total, 30, message="every limited task to run")
    starts = sorted(float(x) for x in r.lrange("limited:starts", 0, -1))
    begin = starts[0] + 1.0  # past the initial burst
    measured = sum(begin <= t < begin + window for t in starts) / window
    overall = (len(starts) - 1) / (starts[-1] - starts[0])
    print(f"\nrate limit 50/s on 2 workers x 2 children: {measured:.1f}/s over a {window:g} s "
          f"window, {overall:.1f}/s overall; unlimited task latency max "
          f"{max(latencies) * 1000:.0f} ms")
    assert rate * 0.9 <= measured <= rate * 1.1
    assert max(latencies) < 1.0


# -- 4. Redis restart under load ---------------------------------------------------------------
def test_redis_restart_under_load_loses_nothing_and_kills_nobody(fapp, start_worker):
    from tests.apps.faults import pure

    server = RedisServer()  # a persistent one of our own, not the session's
    server.start(persist=True)
    client = redis.Redis.from_url(server.url)
    session_url = fapp.conf.broker_url
    fapp.close()
    fapp.conf.broker_url = server.url  # the producer writes to it too
    w = None
    try:
        w = start_worker(concurrency=2, module="tests.apps.faults", name="survivor",
                         env={"FASTQ_BROKER_URL": server.url}, wait=False)
        w.wait_ready(client)
        children = w.child_pids(client)
        ids: list[str] = []
        errors: list[BaseException] = []

        def produce():
            try:
                for chunk in range(40):
                    first = chunk * 250
                    results = pure.starmap([(i, 0.0005) for i in range(first, first + 250)])
                    ids.extend(res.id for res in results)
                    time.sleep(0.05)
            except BaseException as exc:  # noqa: BLE001 - reported by the test
                errors.append(exc)

        producer = threading.Thread(target=produce)
        producer.start()
        wait_for(lambda: client.dbsize() > 2000, 60, message="the run to be under way")
        server.stop()
        time.sleep(1.0)
        server.start(persist=True)  # same port and directory: the AOF brings everything back
        restarted = time.monotonic()
        producer.join(60)
        assert not producer.is_alive() and not errors, errors
        assert len(ids) == 10_000
        after = [res.id for res in pure.map(range(10_000, 10_100))]  # sent after the restart

        try:
            wait_for(lambda: all_finished(client, ids + after), 60,
                     message="all 10 100 tasks to finish")
        except AssertionError:
            missing = sum(not n for n in result_lengths(client, ids + after))
            raise AssertionError(
                f"{missing} tasks never finished; XPENDING {client.xpending(STREAM, keys.GROUP)}, "
                f"XLEN {client.xlen(STREAM)}; worker log:\n{w.output()[-3000:]}") from None
        records = result_records(client, ids + after)
        assert {rec[0] for rec in records} == {states.SUCCESS}
        assert [rec[1] for rec in records] == list(range(10_100))
        print(f"\nredis restart: all 10 100 results present "
              f"{time.monotonic() - restarted:.1f} s after the restart")
        assert w.proc.poll() is None  # the same supervisor
        assert w.child_pids(client) == children  # and the same children
        assert "broker unreachable, retrying" in w.output()  # the outage was noticed
        assert "broker reachable again" in w.output()
    finally:
        if w is not None:
            w.halt(client, signal.SIGTERM)
        client.close()
        fapp.close()
        fapp.conf.broker_url = session_url
        server.stop()
        shutil.rmtree(server.dir, ignore_errors=True)


# -- 5. no hostage tasks -----------------------------------------------------------------------
def test_short_tasks_prefetched_with_a_long_one_are_not_held_hostage(fapp, worker, r):
    from tests.apps.faults import hold, work

    long = hold.apply_async(("long", 30))  # queued first: the child that fetches it fetches
    shorts = [res.id for res in work.map(range(100))]  # 99 of these with it
    w = worker(concurrency=2, name="hostage")
    ready = time.monotonic()
    wait_for(lambda: all_finished(r, shorts), 8, message="the 100 short tasks")
    took = time.monotonic() - ready
    print(f"\nprefetched behind a 30 s task: 100 short tasks done {took:.1f} s after start")
    assert not r.exists(keys.result(long.id)) and r.llen("starts:long") == 1  # still running
    assert "handed prefetched messages of a busy child back to the queue" in w.output()
    r.set(release_key("long"), 1)
    assert long.get(timeout=5) == "long"
    assert {int(v) for v in r.hgetall("effects").values()} == {1}


def test_short_tasks_sent_while_a_child_is_busy_run_on_the_other(fapp, worker, r):
    from tests.apps.faults import hold, work

    worker(concurrency=2, name="busybody")
    long = hold.apply_async(("long", 30))
    wait_for(lambda: r.llen("starts:long") == 1, 10, message="the long task to start")
    sent = time.monotonic()
    shorts = [res.id for res in work.map(range(100))]
    wait_for(lambda: all_finished(r, shorts), 8, message="the 100 short tasks")
    print(f"\none child busy for 30 s: 100 short tasks done in {time.monotonic() - sent:.2f} s")
    assert not r.exists(keys.result(long.id))  # still running
    r.set(release_key("long"), 1)
    assert long.get(timeout=5) == "long"


# -- 6. the watchdog ---------------------------------------------------------------------------
def test_watchdog_restarts_a_child_whose_fetch_loop_went_quiet(fapp, worker, r):
    from tests.apps.faults import quick

    w = worker(concurrency=1, name="sleepy", env={"FASTQ_STALL_S": "1", "FASTQ_BLOCK_MS": "200"})
    frozen = w.child_pids(r)[0]
    os.kill(frozen, signal.SIGSTOP)  # idle, then silent: no fetch round any more
    replaced = wait_for(lambda: (pid := w.child_pids(r).get(0)) != frozen and pid, 15,
                        message="a new child in slot 0")
    assert "gone quiet" in w.output()
    assert not _alive(frozen)
    assert replaced != frozen and _alive(replaced)
    assert quick.delay("awake").get(timeout=10) == "awake"
    assert w.proc.poll() is None
    # the health record tells that the watchdog had to act
    code, out = wait_for(lambda: (h := _health("-w", "sleepy"))[0] == 0 and "restarts 1" in h[1]
                         and h, 10, message="a health report with the restart")
    assert "watchdog restarts 1, last" in out, out


def _health(*args: str) -> tuple[int, str]:
    from click.testing import CliRunner

    from fastq.cli import main

    res = CliRunner().invoke(main, ["-A", "tests.apps.faults", "health", *args])
    return res.exit_code, res.output


def test_health_check_reports_a_quiet_fetch_loop_and_recovers(fapp, worker, r):
    import json

    assert _health("-w", "nobody")[0] == 2  # no such live worker
    w = worker(concurrency=2, name="probe", env={"FASTQ_STALL_S": "30", "FASTQ_BLOCK_MS": "200",
                                                 "FASTQ_HEARTBEAT_S": "0.3"})
    wait_for(lambda: _health("-w", "probe")[0] == 0, 10, message="a healthy report")
    frozen = w.child_pids(r)[1]
    os.kill(frozen, signal.SIGSTOP)  # idle and silent: it has stopped consuming
    try:
        code, out = wait_for(lambda: (h := _health("-w", "probe"))[0] == 1 and h, 15,
                             message="health to report the quiet child")
        assert "UNHEALTHY" in out and "probe:1: fetch loop quiet" in out, out
        assert "probe:0" not in out  # the other child is fine
        (rec,) = json.loads(_health("-w", "probe", "--json")[1])
        assert rec["worker"] == "probe" and rec["watchdog_restarts"] == 0
        assert [c["busy"] for c in rec["children"]] == [False, False]
    finally:
        os.kill(frozen, signal.SIGCONT)
    wait_for(lambda: _health("-w", "probe")[0] == 0, 10, message="healthy again")
    assert w.proc.poll() is None
