"""Real worker processes: exactly-once without crashes, child restarts, dead letters, shutdown."""
from __future__ import annotations

import os
import signal
import time

import msgpack

from fastq import keys
from tests.conftest import wait_for


def test_two_workers_run_10000_tasks_each_side_effect_once(app, start_worker, r):
    from tests.apps.basic import record

    start_worker(concurrency=4, name="alpha")
    start_worker(concurrency=4, name="beta")
    results = record.map(range(10_000))
    assert sorted(res.get(timeout=120) for res in results) == list(range(10_000))
    effects = r.hgetall("effects")
    assert len(effects) == 10_000
    assert {int(v) for v in effects.values()} == {1}
    # Both workers took part, and the stream holds nothing once everything is acked.
    by_worker: dict[str, int] = {}
    for key in r.keys(keys.WORKER_PATTERN):
        info = msgpack.unpackb(r.get(key))
        name = info["consumer"].split(":")[0]
        by_worker[name] = by_worker.get(name, 0) + info["processed"]
    assert set(by_worker) == {"alpha", "beta"}
    assert wait_for(lambda: r.xlen(keys.stream("default", 2)) == 0, 10)


def test_sigkill_of_a_child_mid_run_is_restarted_and_the_run_completes(app, start_worker, r):
    from tests.apps.basic import slow_record

    worker = start_worker(concurrency=2, name="crashy")
    before = worker.child_pids(r)
    results = slow_record.starmap([(i, 0.005) for i in range(1000)])
    wait_for(lambda: r.hlen("effects") > 100, 30, message="the run to be under way")
    os.kill(before[0], signal.SIGKILL)
    assert sorted(res.get(timeout=120) for res in results) == list(range(1000))
    after = wait_for(lambda: (p := worker.child_pids(r)).get(0) != before[0] and p, 20,
                     message="a new child in slot 0")
    assert after[0] != before[0] and after[1] == before[1]
    assert "child exited, restarting" in worker.output()
    assert worker.proc.poll() is None
    # Every task ran; the killed child's in-flight ones may have run twice (at-least-once).
    assert r.hlen("effects") == 1000


def test_garbage_and_unknown_tasks_go_to_the_dlq_and_the_worker_keeps_serving(app, start_worker, r):
    from fastq._core import encode_message
    from fastq.message import Message
    from tests.apps.basic import add

    start_worker(concurrency=1)
    stream = keys.stream("default", 2)
    r.xadd(stream, {"m": b"\x00garbage\xff"})
    r.xadd(stream, {"m": encode_message(Message("id-unknown", "no.such.task", b"\x92\x90\x80"))})
    r.xadd(stream, {"m": encode_message(Message("id-badbody", "tests.apps.basic.add", b"\xc1"))})
    assert add.delay(1, 2).get(timeout=10) == 3
    dead = wait_for(lambda: (d := r.xrange(keys.dlq("default"))) and len(d) == 3 and d, 10,
                    message="three dead letters")
    reasons = [fields[b"reason"].decode() for _, fields in dead]
    assert reasons[0].startswith("undecodable message")
    assert "unknown task 'no.such.task'" in reasons[1]
    assert reasons[2].startswith("undecodable body")
    assert dead[0][1][b"m"] == b"\x00garbage\xff"  # the original bytes are kept
    assert dead[1][1][b"id"] == b"id-unknown"
    assert r.xlen(stream) == 0  # dead letters were acked out of the ready stream
    assert add.delay(2, 2).get(timeout=10) == 4


def test_warm_shutdown_finishes_and_acks_in_flight_tasks(app, start_worker, r):
    from tests.apps.basic import slow_record

    worker = start_worker(concurrency=1)
    results = slow_record.starmap([(i, 0.1) for i in range(10)])
    wait_for(lambda: r.hlen("effects") >= 1, 10, message="the first task to run")
    assert worker.stop(signal.SIGTERM) == 0
    assert all(res.state == "SUCCESS" for res in results)
    assert r.xpending(keys.stream("default", 2), keys.GROUP)["pending"] == 0
    assert "warm shutdown" in worker.output()


def test_second_signal_is_a_cold_shutdown(app, start_worker, r):
    from tests.apps.basic import slow_record

    worker = start_worker(concurrency=1)
    slow_record.starmap([(i, 1.0) for i in range(5)])
    wait_for(lambda: r.xpending(keys.stream("default", 2), keys.GROUP)["pending"] > 0, 10)
    worker.proc.send_signal(signal.SIGTERM)
    time.sleep(0.2)
    started = time.monotonic()
    worker.proc.send_signal(signal.SIGTERM)
    worker.proc.wait(10)
    assert time.monotonic() - started < 3
    assert "cold shutdown" in worker.output()
    # What the killed child had in flight stays pending, to be re-run.
    assert r.xpending(keys.stream("default", 2), keys.GROUP)["pending"] > 0


def test_restarted_worker_with_the_same_name_recovers_its_pending_messages(app, start_worker, r):
    from tests.apps.basic import slow_record

    worker = start_worker(concurrency=1, name="stable")
    results = slow_record.starmap([(i, 0.2) for i in range(5)])
    wait_for(lambda: r.hlen("effects") >= 1, 10)
    worker.halt(r)
    start_worker(concurrency=1, name="stable")
    assert sorted(res.get(timeout=30) for res in results) == list(range(5))


def test_priorities_critical_runs_before_batch(app, start_worker, r):
    from tests.apps.basic import log_order

    with app.batch():
        for i in range(100):
            log_order.apply_async((f"b{i}",), priority="batch")
        for i in range(100):
            log_order.apply_async((f"c{i}",), priority="critical")
    start_worker(concurrency=1)
    wait_for(lambda: r.llen("order") == 200, 30)
    first = [x.decode()[0] for x in r.lrange("order", 0, 49)]
    assert first.count("c") >= 45  # weights 16:1 interleave, critical dominates
    assert "b" in [x.decode()[0] for x in r.lrange("order", 0, 199)]


def test_orphaned_children_stop_when_the_supervisor_dies(app, start_worker, r):
    worker = start_worker(concurrency=2, name="orphan")
    pids = worker.child_pids(r)
    worker.stop(signal.SIGKILL)

    def all_gone():
        for pid in pids.values():
            try:
                os.kill(pid, 0)
                if open(f"/proc/{pid}/stat").read().split()[2] != "Z":
                    return False
            except (ProcessLookupError, FileNotFoundError):
                pass
        return True

    wait_for(all_gone, 15, message="children to exit after their supervisor died")
