"""Workflows on a real Redis with real worker processes (tests/apps/flows.py): chain, group, chord,
their nestings, app.dag(), failures and errbacks, revoke, and a worker killed mid-graph."""
from __future__ import annotations

import time

import msgpack
import pytest

from fastq import UpstreamFailed, WorkflowError, chain, chord, group, keys
from fastq.workflows import GroupResult
from tests.apps.flows import (
    add,
    collect,
    fail,
    fail_later,
    flaky_inc,
    headers_of,
    ident,
    inc,
    nap,
    on_error,
    on_error_old,
    other_inc,
    record,
    slow_inc,
    swap,
    tsum,
)
from tests.conftest import app_fixture, wait_for, worker_fixture

fapp = app_fixture("tests.apps.flows")
worker = worker_fixture("tests.apps.flows", 2, "fapp")


def test_chain_passes_each_result_on_and_links_parents(fapp, worker):
    worker()
    res = (add.s(1, 2) | inc.s() | inc.s() | collect.s(tag="end")).delay()
    assert res.get(timeout=20) == ["end", 5]
    assert res.parent.get(timeout=1) == 5 and res.parent.parent.parent.get(timeout=1) == 3
    # immutable signatures get nothing prepended; arguments of apply_async go to the first task
    assert chain(inc.s(), ident.si(7), inc.s()).apply_async((10,)).get(timeout=20) == 8


def test_diamond_dag(fapp, worker):
    worker()
    d = fapp.dag()
    d.add("a", ident.s(1))
    d.add("b", inc.s(), after=["a"])
    d.add("c", add.s(10), after=["a"])
    d.add("d", collect.s(), after=["b", "c"])
    result = d.submit()
    assert result.get(timeout=20) == [2, 11]  # after several: their results in `after` order
    assert result.nodes() == {"a": "SUCCESS", "b": "SUCCESS", "c": "SUCCESS", "d": "SUCCESS"}
    assert result["b"].get(timeout=1) == 2


def test_a_cycle_is_named_and_nothing_is_sent(fapp, r):
    d = fapp.dag()
    d.add("a", ident.s(1), after=["c"])
    d.add("b", inc.s(), after=["a"])
    d.add("c", inc.s(), after=["b"])
    d.add("x", ident.s(0))
    with pytest.raises(WorkflowError, match=r"cycle: (a -> b -> c -> a|b -> c -> a -> b|c -> a -> b -> c)"):
        d.submit()
    bad = fapp.dag().add("a", ident.s(1), after=["nope"])
    with pytest.raises(WorkflowError, match="'nope', which is not a node"):
        bad.submit()
    assert r.keys("fastq:*") == []  # not a stream, not a graph key


def test_chord_body_gets_1000_results_in_header_order(fapp, worker):
    worker()
    # a reversed sleep makes the last header tasks finish first: order must still be kept
    header = [nap.s(i, ms=0) for i in range(1000)]
    res = chord(header, collect.s()).delay()
    assert res.get(timeout=60) == list(range(1000))
    assert chord([], collect.s()).delay().get(timeout=20) == []  # Celery: an empty header gives []


def test_chain_of_1000(fapp, worker):
    worker()
    res = chain(ident.s(0), *[inc.s() for _ in range(999)]).delay()
    assert res.get(timeout=120) == 999


def test_group_of_10000(fapp, worker, r):
    worker()
    res = group(ident.s(i) for i in range(10_000)).delay()
    assert isinstance(res, GroupResult) and len(res) == 10_000
    assert res.get(timeout=120) == list(range(10_000))
    assert res.completed_count() == 10_000 and res.successful() and res.ready()
    res.save()
    again = GroupResult.restore(res.id, fapp)
    assert [x.id for x in again.results] == [x.id for x in res.results]


def test_nestings(fapp, worker):
    worker()
    # a group in a chain: each member gets the result, the next task their list
    assert chain(ident.s(1), group(inc.s(), add.s(10)), collect.s()).delay().get(timeout=20) \
        == [2, 11]
    # a chain in a group
    assert group(chain(ident.s(1), inc.s()), ident.s(5)).delay().get(timeout=20) == [2, 5]
    # a chord in a chain, and a chain as a chord body
    assert chain(ident.s(2), chord([inc.s(), inc.s()], tsum.s()), inc.s()).delay().get(
        timeout=20) == 7
    assert chord([ident.s(1), ident.s(2)], chain(tsum.s(), inc.s())).delay().get(timeout=20) == 4
    # a chord of chords
    inner = [chord([ident.s(i), ident.s(i)], tsum.s()) for i in range(3)]
    assert chord(inner, collect.s()).delay().get(timeout=20) == [0, 2, 4]
    # a group piped into a task is a chord
    assert (group(ident.s(1), ident.s(2)) | tsum.s()).delay().get(timeout=20) == 3


def test_failure_mid_chain_fails_the_rest_and_fires_link_error_once(fapp, worker, r):
    worker()
    res = chain(inc.s(1), fail.s(), inc.s(), inc.s()).apply_async(link_error=on_error.s())
    with pytest.raises(UpstreamFailed) as info:
        res.get(timeout=20)
    failed = res.parent.parent
    assert info.value.node_id == failed.id and info.value.exc_type.endswith("Boom")
    assert info.value.exc_message == "it broke"
    assert [res.state, res.parent.state, failed.state, failed.parent.state] == \
        ["FAILURE", "FAILURE", "FAILURE", "SUCCESS"]
    wait_for(lambda: r.llen("flows:errors") >= 1, 20, message="the errback")
    time.sleep(0.5)  # nothing else may arrive
    assert [msgpack.unpackb(x) for x in r.lrange("flows:errors", 0, -1)] == [
        [failed.id, "Boom", "it broke", True]]  # the worker knows Boom: rebuilt as itself
    # the old form gets the failed task's id
    one = fail.apply_async((1,), link_error=on_error_old.si())
    with pytest.raises(Exception, match="it broke"):
        one.get(timeout=20)
    wait_for(lambda: r.lrange("flows:errors_old", 0, -1) == [one.id.encode()], 20,
             message="the old-style errback")
    # one canvas sent twice: two workflows, each fires its errback once; the canvas is unchanged
    twice = chain(fail.s(), inc.s())
    twice.link_error(on_error_old.si())
    before = repr(twice), dict(twice.options)
    sent = [twice.delay(), twice.delay()]
    for res in sent:
        with pytest.raises(UpstreamFailed):
            res.get(timeout=20)
    wait_for(lambda: r.llen("flows:errors_old") == 3, 20, message="both errbacks")
    assert (repr(twice), dict(twice.options)) == before


def test_link_and_on_failure_run(fapp, worker, r):
    worker()
    res = add.apply_async((2, 3), link=record.s())
    assert res.get(timeout=20) == 5
    wait_for(lambda: r.llen("flows:record") == 1, 20, message="the link callback")
    assert msgpack.unpackb(r.lindex("flows:record", 0)) == [5]
    d = fapp.dag()
    d.add("a", fail.s())
    d.add("cleanup", record.si("cleanup"), after=["a"], on_failure="run")
    d.add("never", inc.s(), after=["a"])
    out = d.submit()
    wait_for(lambda: out.nodes()["never"] == "FAILURE" and out.nodes()["cleanup"] == "SUCCESS",
             20, message="cleanup ran, the dependent failed")
    assert msgpack.unpackb(r.lindex("flows:record", 1)) == ["cleanup"]


def test_a_revoked_group_never_runs_its_unrun_members(fapp, worker, r):
    res = group(record.s(i) for i in range(20)).delay()
    body_waits = chord([record.s("h")], record.s()).delay()
    res.revoke()
    fapp.control.revoke(body_waits.id)
    worker()
    wait_for(lambda: all(x.state == "REVOKED" for x in res.results), 20, message="all revoked")
    time.sleep(0.5)
    ran = [msgpack.unpackb(x) for x in r.lrange("flows:record", 0, -1)]
    assert ran == [["h"]]  # the header ran; no group member and not the revoked body
    assert body_waits.state == "REVOKED"


def test_worker_killed_mid_graph_completes_each_node_once(fapp, worker, r):
    w = worker()
    header = [nap.s(i, ms=2).set(task_id=f"h-{i}") for i in range(2000)]
    big = chord(header, record.s())
    res = big.delay()
    # each step takes 2 ms: the chain is mid-way when the worker dies (its steps run one after
    # another in one child's batches, their outcomes written every flush)
    links = [slow_inc.s().set(task_id=f"c-{i}") for i in range(1, 300)]
    long_chain = chain(nap.s(0, ms=2).set(task_id="c-0"), *links).delay()
    wait_for(lambda: len(r.keys("fastq:r:c-*")) >= 20, 30, message="some progress")
    w.halt(r)
    assert len(r.keys("fastq:r:c-*")) < 300  # killed mid-chain
    worker(name="after-the-crash")
    assert long_chain.get(timeout=120) == 299
    assert all(r.llen(keys.result(f"c-{i}")) == 1 for i in range(300))
    assert res.get(timeout=120) == 1
    time.sleep(1.5)  # a sweep period: a duplicate release would show by now
    bodies = [msgpack.unpackb(x) for x in r.lrange("flows:record", 0, -1)]
    assert bodies == [[list(range(2000))]]  # the body ran once, with every result in order
    assert all(r.llen(keys.result(f"h-{i}")) == 1 for i in range(2000))
    assert r.zcard(keys.GRAPHS) == 0  # both graphs finished


def test_graph_keys_expire(fapp, worker, r):
    worker()
    res = chord([ident.s(1)], tsum.s()).delay()
    assert res.get(timeout=20) == 1
    graphs = r.keys("fastq:dag:*")
    assert graphs and all(0 < r.pttl(k) <= fapp.conf.result_expires * 1000 for k in graphs)


def test_workflows_run_on_memory_broker_too():
    """memory:// runs the same Lua verbs over fakeredis: a chain and a chord drain in-process."""
    from fastq import App
    from fastq.testing import drain

    mem = App("mem-flows", broker="memory://flows")
    mem.task(inc.fn, name="inc")
    mem.task(tsum.fn, name="tsum")
    r = chain(mem.signature("inc", (1,)), mem.signature("inc")).delay()
    c = chord([mem.signature("inc", (i,)) for i in range(5)], mem.signature("tsum")).delay()
    for _ in range(4):  # each drain runs what the previous one released
        drain(mem)
    assert r.get(timeout=1) == 3 and c.get(timeout=1) == 15


def test_depends_on_waits_across_two_queues_and_fails_with_the_cause(fapp, worker):
    # no sweeps: each wait must be settled by the child that ran the task, or by the submitter
    quiet = {"FASTQ_WORKFLOW_SWEEP_S": "3600"}
    worker(queues="default", env=quiet)
    worker(queues="other", env=quiet)
    slow = nap.delay(1, ms=400)  # queue default, on one worker
    slow_other = nap.apply_async((2,), {"ms": 500}, queue="other")  # on the other worker
    after = other_inc.apply_async((2,), depends_on=[slow, slow_other.id])
    also = inc.apply_async((0,), depends_on=[slow])  # a second graph waiting on the same task
    assert after.get(timeout=20) == 3
    assert slow.ready() and slow_other.ready()  # it ran only once both had finished
    assert also.get(timeout=20) == 1
    # a chain may wait too; a task that finished before the wait was announced counts at once
    assert (inc.s(1) | inc.s()).apply_async(depends_on=[after]).get(timeout=20) == 3
    broken = fail_later.delay(ms=400)
    waiting = inc.apply_async((1,), depends_on=[slow, broken])
    with pytest.raises(UpstreamFailed) as info:
        waiting.get(timeout=20)
    assert (info.value.node_id, info.value.exc_type) == (broken.id, "tests.apps.flows.Boom")
    assert waiting.state == "FAILURE"
    r = fapp.broker.client
    assert r.zcard(keys.GRAPHS) == 0  # every graph finished
    assert r.zcard(keys.WATCHED) == 0  # every wait settled and forgotten


def test_depends_on_a_task_that_finished_unseen_is_settled_by_the_sweeper(fapp, worker, r):
    from fastq._core.message import CODEC_JSON
    from fastq.result import success_record

    w = worker()
    waiting = inc.apply_async((41,), depends_on=["finished-elsewhere"])
    time.sleep(0.5)
    assert waiting.state == "PENDING"  # nothing has run "finished-elsewhere" yet
    # its result appears without a fastq worker seeing it finish (as after a crash between the
    # write and the graph update): only the supervisor's sweep can settle the wait
    r.rpush(keys.result("finished-elsewhere"), success_record(1, "elsewhere", CODEC_JSON, 1 << 30))
    assert waiting.get(timeout=10) == 42
    assert "Traceback" not in w.output()


def test_what_a_workflow_cannot_do_is_refused_before_sending(fapp, r):
    with pytest.raises(WorkflowError, match="AsyncResults or task ids"):
        inc.apply_async((1,), depends_on=[42])
    with pytest.raises(WorkflowError, match="a task of this same workflow"):
        chain(inc.s(1).set(task_id="t1"), inc.si(2).set(depends_on=["t1"])).delay()
    with pytest.raises(WorkflowError, match=r"unsupported options .*\['unique_key'\]"):
        group(inc.s(1).set(unique_key="once"), inc.s(2)).delay()  # refused, not ignored
    assert r.keys("fastq:*") == []


def test_a_chord_with_an_empty_header_uses_its_bodys_app(fapp):
    from fastq import App
    from tests.apps.flows import collect

    App("another", broker=fapp.conf.broker_url)  # now the current app, with other settings
    assert chord([], collect.s()).app is fapp


def test_chain_steps_run_in_one_workers_batch_and_a_retried_step_runs_twice_only(fapp, worker, r):
    worker(concurrency=1)
    ids = [f"s-{i}" for i in range(50)]
    steps = [inc.s().set(task_id=task_id) for task_id in ids]
    steps[20] = flaky_inc.s().set(task_id=ids[20])  # retried once, with a countdown
    res = chain(ident.s(0), *steps).delay()
    assert res.get(timeout=30) == 50
    assert int(r.get(f"flows:runs:{ids[20]}")) == 2  # sent once more by its retry, never again
    time.sleep(1.5)  # a sweep period: a second send of the retried step would show by now
    assert int(r.get(f"flows:runs:{ids[20]}")) == 2
    assert all(r.llen(keys.result(task_id)) == 1 for task_id in ids)
    assert r.zcard(keys.GRAPHS) == 0


def test_chain_steps_across_queues_and_a_server_that_forgot_its_scripts(fapp, worker, r):
    worker(queues="default,other")
    # steps in another queue this worker also serves, and a step in a queue nobody serves yet
    res = chain(ident.s(0), inc.s(), other_inc.s(), inc.s(), other_inc.s()).delay()
    assert res.get(timeout=20) == 4
    r.script_flush()  # the next finish calls dag_complete.lua by a sha the server forgot
    assert chain(ident.s(0), *[inc.s() for _ in range(30)]).delay().get(timeout=20) == 30
    stranded = chain(ident.s(0), inc.s().set(queue="nobody"), inc.s()).delay()
    wait_for(lambda: sum(r.xlen(k) for k in keys.streams("nobody")) == 1, 20,
             message="sent to its queue")
    worker(queues="nobody", name="nobody-worker")
    assert stranded.get(timeout=20) == 2


def test_terminating_a_chain_step_run_in_its_predecessors_batch(fapp, worker, r):
    worker(concurrency=1)
    # the chain's first task is written at once (the first after a wait is); t-1 runs in t-0's
    # batch
    res = chain(ident.s(0), inc.s().set(task_id="t-0"), nap.s(ms=30_000).set(task_id="t-1"),
                inc.s().set(task_id="t-2")).delay()

    def running() -> bool:
        active = fapp.control.inspect(timeout=0.5).active() or {}
        return any(t["id"] == "t-1" for tasks in active.values() for t in tasks)

    wait_for(running, 20, message="t-1 running")
    fapp.control.revoke("t-1", terminate=True)
    # the killed child's entry (t-0's, the chain's start here) is run again by the next child,
    # which finds t-1 revoked: t-0's outcome is written once, t-1 and t-2 end REVOKED
    wait_for(lambda: res.state == "REVOKED", 30, message="the chain's end revoked")
    assert fapp.AsyncResult("t-1").state == "REVOKED"
    assert fapp.AsyncResult("t-0").get(timeout=1) == 1 and r.llen(keys.result("t-0")) == 1


def test_a_task_replaces_itself_by_a_task_a_chain_or_a_group(fapp, worker, r):
    worker()
    res = swap.delay(1)
    assert res.get(timeout=20) == 2 and r.llen(keys.result(res.id)) == 1  # inc(1), under its id
    assert swap.delay(1, how="chain").get(timeout=20) == 3
    assert swap.delay(1, how="group").get(timeout=20) == [2, 12]
    # in a chain, the rest goes on from the replacement's result (a task, or a whole canvas)
    assert (ident.s(1) | swap.s() | inc.s()).delay().get(timeout=20) == 3
    assert (ident.s(1) | swap.s(how="chain") | inc.s()).delay().get(timeout=20) == 4
    assert chord([swap.s(1, how="group"), swap.s(5)], collect.s()).delay().get(timeout=20) \
        == [[2, 12], 6]
    assert swap.apply((1,)).get() == 2  # eager: the replacement runs here


def test_replace_outside_a_running_task_is_refused(fapp):
    with pytest.raises(RuntimeError, match="running task"):
        swap.replace(inc.s(1))


def test_headers_and_ignore_result_on_workflow_nodes_and_group_members(fapp, worker, r):
    worker()
    flow = chain(ident.s(1), headers_of.s().set(headers={"trace": "t1"}))
    assert flow.delay().get(timeout=20) == {"trace": "t1"}
    quiet = headers_of.s().set(ignore_result=True, task_id="quiet-member")
    res = group(headers_of.s().set(headers={"a": 1}), headers_of.s(), quiet).delay()
    assert [x.get(timeout=20) for x in res.results[:2]] == [{"a": 1}, {}]
    # the third ran too (acked: its entry is gone from the stream), and its result is not stored
    wait_for(lambda: sum(r.xlen(k) for k in keys.streams("default")) == 0, 20,
             message="every member acknowledged")
    assert not r.exists(keys.result("quiet-member"))
