"""Dead-letter queue management (fastq/dlq.py and ``fastq dlq ...``) against real workers."""
from __future__ import annotations

import itertools
import os
import subprocess
import sys
import time
import uuid

import msgpack
import pytest
import redis

from fastq import App, keys
from fastq._core import decode_message, encode_message, pack_body
from fastq.dlq import DeadLetters
from fastq.errors import BrokerRefused
from fastq.message import Message
from fastq.testing import drain
from tests.conftest import ROOT, wait_for

ADD = "tests.apps.basic.add"
ECHO = "tests.apps.basic.echo"
_SEQ = itertools.count(1)


def envelope(task: str, args: tuple = (), priority: int = 2, task_id: str | None = None,
             attempt: int = 0) -> tuple[str, bytes]:
    task_id = task_id or str(uuid.uuid4())
    body, compressed = pack_body(args, {}, 0, 16384)
    return task_id, encode_message(Message(task_id, task, body, 0, compressed, priority,
                                           attempt=attempt))


def write_dead(r: redis.Redis, queue: str, data: bytes, reason: str = "test", task: str = "",
               task_id: str = "", **extra) -> str:
    """A dead letter as Child._dead_letter writes it (plus optional extra fields)."""
    r.sadd(keys.QUEUES, queue)
    fields = {"m": data, "reason": reason, "task": task, "id": task_id,
              "stream": keys.stream(queue, 2), "entry": "1-0",
              "failed_at": str(int(time.time() * 1000)), "consumer": "test:0", **extra}
    # ids unique across queues too (two queues' streams may hold the same id: see below)
    return r.xadd(keys.dlq(queue), fields, id=f"{int(time.time() * 1000)}-{next(_SEQ)}").decode()


def dead_task(r, queue: str, task: str, args: tuple = (), priority: int = 2, **extra):
    task_id, data = envelope(task, args, priority)
    entry = write_dead(r, queue, data, reason=f"unknown task {task!r}", task=task,
                       task_id=task_id, **extra)
    return task_id, entry


def fastq(*args: str, input: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fastq", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=str(ROOT), input=input,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


# -- a real worker dead-letters, a requeue brings the message back -------------------------------
def test_garbage_and_unknown_tasks_are_dead_lettered_and_listed(app, start_worker, r):
    start_worker(concurrency=1)
    r.xadd(keys.stream("default", 2), {"m": b"garbage, not an envelope"})
    sent = app.send_task("nope.unknown", (1, 2))
    wait_for(lambda: r.xlen(keys.dlq("default")) == 2, message="two dead letters")

    letters = DeadLetters(app).list()
    assert len(letters) == 2
    garbage = next(dl for dl in letters if dl.task == "")
    unknown = next(dl for dl in letters if dl.task == "nope.unknown")
    assert garbage.reason.startswith("undecodable message")
    assert garbage.decode_error and not garbage.requeueable
    assert garbage.envelope == b"garbage, not an envelope" and garbage.priority is None
    assert unknown.reason == "unknown task 'nope.unknown': not registered in this worker"
    assert unknown.task_id == sent.id and unknown.queue == "default" and unknown.priority == 2
    assert unknown.requeueable and unknown.attempts == 1 and unknown.errors == []  # ran no times,
    # but the worker records attempts = envelope attempt + 1
    assert unknown.consumer.endswith(":0") and unknown.stream == keys.stream("default", 2)
    assert abs(unknown.failed_at - time.time() * 1000) < 60_000
    assert DeadLetters(app).list(task="nope.unknown") == [unknown]
    assert DeadLetters(app).list(limit=1) == letters[:1]
    assert DeadLetters(app).list(queue="other") == []


def test_requeued_message_runs_with_the_same_id_on_a_worker_that_knows_the_task(app, start_worker,
                                                                                  r):
    from tests.apps.basic import add

    # fastq.demo_tasks' app does not know tests.apps.basic.add: its worker dead-letters it
    first = start_worker(concurrency=1, queues="dlqq", module="fastq.demo_tasks")
    sent = add.apply_async((2, 3), queue="dlqq", priority="high")
    wait_for(lambda: r.xlen(keys.dlq("dlqq")) == 1, message="the dead letter")
    first.stop()
    dead = DeadLetters(app)
    [dl] = dead.list(queue="dlqq")
    assert dl.reason.startswith(f"unknown task {ADD!r}") and dl.task_id == sent.id

    assert dead.requeue(task=ADD) == 1
    assert r.xlen(keys.dlq("dlqq")) == 0
    [(_entry_id, fields)] = r.xrange(keys.stream("dlqq", 1))  # back at its priority (high)
    assert fields[b"m"] == dl.envelope  # the original bytes: same id, same arguments
    assert decode_message(fields[b"m"]).id == sent.id

    start_worker(concurrency=1, queues="dlqq")
    assert sent.get(timeout=20) == 5
    assert dead.list() == []


def test_requeue_by_task_id_keeps_priority_and_arguments(app, start_worker, r):
    task_id, entry = dead_task(r, "default", ADD, (4, 5), priority=0)
    other_id, other_entry = dead_task(r, "default", ADD, (1, 1), priority=4)
    dead = DeadLetters(app)
    assert dead.show(task_id).dlq_entry_id == entry
    assert dead.requeue([task_id]) == 1
    assert [dl.dlq_entry_id for dl in dead.list()] == [other_entry]
    [(_e, fields)] = r.xrange(keys.stream("default", 0))
    assert decode_message(fields[b"m"]).id == task_id
    assert dead.requeue(ids=[other_entry]) == 1  # by entry id
    assert r.xlen(keys.stream("default", 4)) == 1
    start_worker(concurrency=1)
    assert app.AsyncResult(task_id).get(timeout=20) == 9
    assert app.AsyncResult(other_id).get(timeout=20) == 2


def test_requeue_refuses_an_undecodable_envelope_and_keeps_it(app, r):
    entry = write_dead(r, "default", b"\xfa\x01 truncated", reason="undecodable message: ...")
    task_id, _good = dead_task(r, "default", ADD, (1, 2))
    dead = DeadLetters(app)
    report = dead.requeue_report(all=True)
    assert [dl.task_id for dl, _new in report.requeued] == [task_id]
    [(refused, why)] = report.refused
    assert refused.dlq_entry_id == entry and "undecodable envelope" in why and "purge" in why
    assert [dl.dlq_entry_id for dl in dead.list()] == [entry]
    assert dead.requeue(ids=[entry]) == 0
    assert r.xlen(keys.dlq("default")) == 1
    # the script itself refuses too (the last guard, should the entry change under the caller)
    [refusal] = app.broker.requeue_dead([("default", entry, 2)])
    assert isinstance(refusal, BrokerRefused) and "not a fastq envelope" in str(refusal)
    assert r.xlen(keys.stream("default", 2)) == 1  # only the good one


def test_requeue_twice_is_harmless_and_missing_ids_are_reported(app, r):
    task_id, entry = dead_task(r, "default", ADD, (1, 2))
    dead = DeadLetters(app)
    assert dead.requeue(ids=[entry]) == 1
    report = dead.requeue_report(ids=[entry, "no-such-task"])
    assert len(report) == 0 and report.missing == [entry, "no-such-task"]
    assert r.xlen(keys.stream("default", 2)) == 1
    assert dead.show(task_id) is None


def test_selectors_are_exclusive(app, r):
    dead = DeadLetters(app)
    for kwargs in ({}, {"ids": ["1-0"], "all": True}, {"task": ADD, "all": True}, {"ids": []}):
        with pytest.raises(ValueError, match="exactly one"):
            dead.requeue(**kwargs)
        with pytest.raises(ValueError, match="exactly one"):
            dead.purge(**kwargs)


# -- show: errors, traceback, attempts ------------------------------------------------------------
def test_show_decodes_errors_traceback_and_attempts(app, r):
    errors = [{"attempt": i, "type": "ValueError", "message": f"bad {i}",
               "traceback": "Traceback ...\nValueError"} for i in range(3)]
    task_id, entry = dead_task(r, "default", ADD, (1, 2), errors=msgpack.packb(errors),
                               traceback="Traceback (most recent call last):\nValueError: bad 2")
    dead = DeadLetters(app)
    dl = dead.show(entry)
    assert dl == dead.show(task_id)
    assert dl.errors == errors and dl.attempts == 3
    assert dl.traceback.endswith("ValueError: bad 2")
    _id, explicit = dead_task(r, "default", ADD, (1, 2), attempts="5", errors=b"\xc1 damaged")
    dl = dead.show(explicit)
    assert dl.attempts == 5 and dl.errors == []  # a damaged errors field does not hide the letter
    _id, data = envelope(ADD, (1,), attempt=2)
    plain = write_dead(r, "default", data, task=ADD)
    assert dead.show(plain).attempts == 2  # from the envelope when nothing else says
    assert dead.show("123-0") is None and dead.show("nothing") is None


def test_same_entry_id_in_two_queues(app, r):
    _id, data = envelope(ADD, (1, 2))
    for queue in ("qa", "qb"):
        r.sadd(keys.QUEUES, queue)
        r.xadd(keys.dlq(queue), {"m": data, "task": ADD, "reason": "x"}, id="5-0")
    dead = DeadLetters(app)
    assert {dl.queue for dl in dead.find("5-0")} == {"qa", "qb"}
    assert dead.show("5-0", queue="qb").queue == "qb"
    with pytest.raises(ValueError, match=r"5-0 is in several queues \(qa, qb\); name the queue"):
        dead.purge(ids=["5-0"])
    with pytest.raises(ValueError, match="several queues"):
        dead.requeue(ids=["5-0"])
    out = fastq("-A", "tests.apps.basic", "dlq", "purge", "5-0", "-f")
    assert out.returncode == 2 and "several queues" in out.stderr
    assert dead.purge(ids=["5-0"], queue="qa") == 1
    assert [dl.queue for dl in dead.find("5-0")] == ["qb"]


# -- purge --------------------------------------------------------------------------------------
def test_purge_by_id_task_and_all(app, r):
    a_adds = [dead_task(r, "qa", ADD, (i, i))[1] for i in range(3)]
    for i in range(2):
        dead_task(r, "qa", ECHO, (i,))
    dead_task(r, "qb", ECHO, (9,))
    dead_task(r, "qb", ADD, (9, 9))
    dead = DeadLetters(app)
    assert len(dead.list()) == 7

    assert dead.purge(ids=[a_adds[0]]) == 1
    assert dead.purge([a_adds[1]], queue="qb") == 0  # not in that queue
    assert dead.purge(task=ECHO) == 3  # in every queue
    assert {(dl.queue, dl.task) for dl in dead.list()} == {("qa", ADD), ("qb", ADD)}
    assert dead.purge(all=True, queue="qa") == 2
    assert [dl.queue for dl in dead.list()] == ["qb"]
    assert dead.purge(all=True) == 1
    assert dead.list() == [] and dead.purge(all=True) == 0


# -- the command line -----------------------------------------------------------------------------
def test_dead_letters_on_the_memory_broker_list_requeue_and_purge():
    app = App("dlq-mem", broker=f"memory://{uuid.uuid4().hex}")
    try:
        broker = app.broker
        sent = app.send_task("later", (2, 3))  # not registered yet: dead-lettered
        broker.send("default", 2, b"garbage, not an envelope")
        assert drain(app) == 0
        dead = DeadLetters(app)
        assert dead.count() == 2
        unknown, garbage = dead.list()
        assert unknown.task_id == sent.id and unknown.requeueable and unknown.priority == 2
        assert garbage.envelope == b"garbage, not an envelope" and not garbage.requeueable

        @app.task(name="later")
        def later(x, y):
            return x * y

        report = dead.requeue_report(all=True)
        assert [dl.task_id for dl, _new in report.requeued] == [sent.id]
        assert [dl.dlq_entry_id for dl, _why in report.refused] == [garbage.dlq_entry_id]
        assert drain(app) == 1
        assert sent.get(timeout=1) == 6  # the dead-lettered run's outcome was forgotten
        assert [dl.dlq_entry_id for dl in dead.list()] == [garbage.dlq_entry_id]
        assert dead.requeue(ids=[unknown.dlq_entry_id]) == 0  # gone: requeued once only
        assert dead.purge(all=True) == 1
        assert dead.count() == 0 and dead.list() == []
    finally:
        app.broker.clear()
        app.close()


def test_cli_list_show_requeue_purge(app, r):
    task_id, entry = dead_task(r, "default", ADD, (4, 5), priority=1)
    garbage = write_dead(r, "default", b"junk", reason="undecodable message: not a fastq envelope")
    _other, other_entry = dead_task(r, "other", ECHO, ("hi",))

    out = fastq("-A", "tests.apps.basic", "dlq", "list")
    assert out.returncode == 0, out.stderr
    assert entry in out.stdout and garbage in out.stdout and other_entry in out.stdout
    assert f"unknown task {ADD!r}" in out.stdout and task_id in out.stdout
    assert "3 dead letter(s)" in out.stdout
    out = fastq("-A", "tests.apps.basic", "dlq", "list", "--task", ECHO, "-Q", "other")
    assert other_entry in out.stdout and task_id not in out.stdout
    out = fastq("dlq", "-A", "tests.apps.basic", "list", "--limit", "1")
    assert "1 dead letter(s) (of 3; see --limit)" in out.stdout
    assert "no dead letters" in fastq("dlq", "list", "-Q", "empty").stdout

    out = fastq("-A", "tests.apps.basic", "dlq", "show", task_id)
    assert out.returncode == 0, out.stderr
    assert f"entry      {entry}" in out.stdout and "priority   high (1)" in out.stdout
    assert "args       [4, 5]" in out.stdout or "args       (4, 5)" in out.stdout
    out = fastq("-A", "tests.apps.basic", "dlq", "show", garbage)
    assert "envelope   undecodable" in out.stdout and "b'junk'" in out.stdout
    out = fastq("-A", "tests.apps.basic", "dlq", "show", "nope")
    assert out.returncode == 1 and "no dead letter 'nope'" in out.stderr

    out = fastq("-A", "tests.apps.basic", "dlq", "requeue")
    assert out.returncode == 2 and "--task NAME, or --all" in out.stderr
    out = fastq("-A", "tests.apps.basic", "dlq", "requeue", "--all", "-Q", "default")
    assert out.returncode == 1  # one refused
    assert "requeued 1 dead letter(s)" in out.stdout
    assert f"refused {garbage} (default): undecodable envelope" in out.stderr
    assert r.xlen(keys.stream("default", 1)) == 1 and r.xlen(keys.dlq("other")) == 1

    out = fastq("-A", "tests.apps.basic", "dlq", "purge", "--all", input="n\n")
    assert out.returncode == 1 and "Aborted" in out.stderr
    assert r.xlen(keys.dlq("default")) == 1
    out = fastq("-A", "tests.apps.basic", "dlq", "purge", garbage, "-f")
    assert out.returncode == 0 and "purged 1 dead letter(s)" in out.stdout
    out = fastq("-A", "tests.apps.basic", "dlq", "purge", "--task", ECHO, input="y\n")
    assert out.returncode == 0 and "purged 1 dead letter(s)" in out.stdout
    assert "no dead letters" in fastq("-A", "tests.apps.basic", "dlq", "list").stdout
