"""fastq.tracing: the producer's trace context travels in the headers and the worker's span
continues it. Producer and a real Child (fastq.testing.worker_thread, on the real Redis) run in
this process, so one in-memory exporter sees both sides (tests/apps/traced.py)."""
from __future__ import annotations

import json
import os
import signal

import pytest
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, StatusCode

from fastq import chain, group
from fastq._core import encode_message
from fastq.compat import Celery
from fastq.message import Message, new_task_id
from fastq.testing import drain, worker_thread
from fastq.tracing import Tracing
from tests.apps import traced
from tests.apps import traced_worker as traced_worker_app
from tests.conftest import app_fixture, worker_fixture

app = app_fixture("tests.apps.traced")


@pytest.fixture
def spans(app):
    traced.exporter.clear()

    def finished(name: str | None = None) -> list:
        return [s for s in traced.exporter.get_finished_spans() if name is None or s.name == name]

    return finished


def _parent_of(span):
    return span.parent.span_id if span.parent is not None else None


def test_the_run_continues_the_senders_trace(app, spans):
    with traced.tracer.start_as_current_span("request") as request:
        res = traced.add.delay(2, 3)
    with worker_thread(app):
        assert res.get(timeout=10) == 5
    [send] = spans("send tests.apps.traced.add")
    [run] = spans("run tests.apps.traced.add")
    assert send.kind == SpanKind.PRODUCER and run.kind == SpanKind.CONSUMER
    trace_id = request.get_span_context().trace_id
    assert send.context.trace_id == run.context.trace_id == trace_id
    assert _parent_of(send) == request.get_span_context().span_id
    assert _parent_of(run) == send.context.span_id and run.parent.is_remote
    assert dict(run.attributes) == {
        "messaging.system": "fastq", "messaging.operation.type": "process",
        "messaging.destination.name": "default", "messaging.message.id": res.id,
        "fastq.task.name": "tests.apps.traced.add", "fastq.task.attempt": 0,
        "fastq.task.outcome": "success"}
    assert run.status.status_code == StatusCode.UNSET
    assert send.attributes["messaging.destination.name"] == "default"
    assert send.attributes["messaging.message.id"] == res.id


def test_a_send_without_an_active_span_starts_a_trace(app, spans):
    res = traced.add.apply_async((1, 1), queue="default", headers={"mine": "kept"})
    with worker_thread(app):
        assert res.get(timeout=10) == 2
    [send] = spans("send tests.apps.traced.add")
    [run] = spans("run tests.apps.traced.add")
    assert send.parent is None and _parent_of(run) == send.context.span_id
    assert run.context.trace_id == send.context.trace_id


def test_a_failing_task_has_an_error_status_and_its_exception(app, spans):
    res = traced.boom.delay()
    with worker_thread(app), pytest.raises(ValueError):
        res.get(timeout=10)
    [run] = spans("run tests.apps.traced.boom")
    assert run.status.status_code == StatusCode.ERROR
    assert run.status.description == "ValueError: boom"
    assert run.attributes["fastq.task.outcome"] == "failure"
    [event] = run.events
    assert event.name == "exception" and event.attributes["exception.type"] == "ValueError"


def test_each_attempt_is_a_span_of_the_same_send(app, spans):
    res = traced.flaky.delay()
    drain(app)  # in this thread; it also moves the retry due from the delayed set
    with pytest.raises(KeyError):
        res.get(timeout=1)
    [send] = spans("send tests.apps.traced.flaky")
    first, second = sorted(spans("run tests.apps.traced.flaky"),
                           key=lambda s: s.attributes["fastq.task.attempt"])
    assert [first.attributes["fastq.task.attempt"], second.attributes["fastq.task.attempt"]] == \
        [0, 1]
    assert first.attributes["fastq.task.outcome"] == "retry"
    assert first.status.status_code == StatusCode.UNSET and first.events[0].name == "exception"
    assert second.attributes["fastq.task.outcome"] == "failure"
    assert second.status.status_code == StatusCode.ERROR
    assert second.attributes["fastq.task.dead_letter_reason"].startswith("failed after 2")
    assert _parent_of(first) == _parent_of(second) == send.context.span_id


def test_a_chains_nodes_share_one_trace(app, spans):
    res = chain(traced.add.s(1, 2), traced.inc.s(), traced.inc.s()).apply_async()
    with worker_thread(app):
        assert res.get(timeout=10) == 5
    runs = spans("run tests.apps.traced.add") + spans("run tests.apps.traced.inc")
    assert len(runs) == 3
    [workflow] = spans("send workflow")  # no span was active: one made for the submission
    assert {s.context.trace_id for s in runs} == {workflow.context.trace_id}
    sends = {s.context.span_id: s for s in spans() if s.name.startswith("send tests.")}
    assert len(sends) == 3
    for run in runs:  # each node's run continues its own send, made at submission
        assert _parent_of(sends[_parent_of(run)]) == workflow.context.span_id
        assert run.attributes["fastq.workflow.id"] == workflow.attributes["fastq.workflow.id"]


def test_a_workflow_sent_in_a_span_joins_its_trace(app, spans):
    with traced.tracer.start_as_current_span("request") as request:
        res = group(traced.add.s(1, 1), traced.add.s(2, 2)).apply_async()
        flow = chain(traced.add.s(1, 2), traced.inc.s()).apply_async()
    with worker_thread(app):
        assert res.get(timeout=10) == [2, 4] and flow.get(timeout=10) == 4
    runs = spans("run tests.apps.traced.add") + spans("run tests.apps.traced.inc")
    assert len(runs) == 4 and not spans("send workflow") and not spans("send group")
    assert {s.context.trace_id for s in runs} == {request.get_span_context().trace_id}


def test_a_plain_groups_members_share_one_trace(app, spans):
    res = group(traced.add.s(i, i) for i in range(3)).apply_async()
    with worker_thread(app):
        assert res.get(timeout=10) == [0, 2, 4]
    [sent] = spans("send group")
    assert {s.context.trace_id for s in spans("run tests.apps.traced.add")} == \
        {sent.context.trace_id}


@pytest.mark.parametrize("task", ["spawn", "async_spawn"])
def test_a_task_sent_by_a_running_task_is_its_child(app, spans, task):
    res = getattr(traced, task).delay(1)
    with worker_thread(app):
        child_id = res.get(timeout=10)
        assert app.AsyncResult(child_id).get(timeout=10) in (2, 3)
    [parent_run] = spans(f"run tests.apps.traced.{task}")
    [send] = spans("send tests.apps.traced.add")
    [child_run] = spans("run tests.apps.traced.add")
    assert send.context.trace_id == child_run.context.trace_id == parent_run.context.trace_id
    assert _parent_of(child_run) == send.context.span_id
    if task == "spawn":  # a sync task's span is the active one: the task's own span nests in it
        [inside] = spans("inside spawn")
        assert _parent_of(inside) == parent_run.context.span_id
        assert _parent_of(send) == inside.context.span_id
    else:  # an async task's send finds the running task's span; its own spans, with run_span
        assert _parent_of(send) == parent_run.context.span_id
        [inside] = spans("inside async_spawn")
        assert _parent_of(inside) == parent_run.context.span_id


def test_a_revoked_task_gets_a_skipped_span(app, spans):
    res = traced.add.delay(1, 2)
    app.control.revoke(res.id)
    drain(app)
    assert res.state == "REVOKED"
    [send] = spans("send tests.apps.traced.add")
    [run] = spans("run tests.apps.traced.add")
    assert run.attributes["fastq.task.outcome"] == "skipped"
    assert _parent_of(run) == send.context.span_id


def test_a_body_that_does_not_decode_ends_its_span_as_a_dead_letter(app, spans):
    with traced.tracer.start_as_current_span("request") as request:
        carrier: dict = {}
        propagate.inject(carrier)
    bad = Message(new_task_id(), "tests.apps.traced.add", b"\xc1", options=carrier)
    app.send_message("default", 2, encode_message(bad))
    good = traced.inc.delay(1)
    drain(app)
    assert good.get(timeout=1) == 2
    [run] = spans("run tests.apps.traced.add")
    assert run.attributes["fastq.task.outcome"] == "dead_letter"
    assert run.attributes["fastq.task.dead_letter_reason"].startswith("undecodable body")
    assert run.context.trace_id == request.get_span_context().trace_id
    [after] = spans("run tests.apps.traced.inc")
    assert run.end_time <= after.start_time  # ended (and its context given back) before the next
    assert not trace.get_current_span().get_span_context().is_valid  # drain ran in this thread


def test_two_workers_in_one_process_keep_their_runs_apart(app, spans):
    results = [traced.nap.apply_async((i,), queue="ab"[i % 2]) for i in range(40)]
    with worker_thread(app, "a"), worker_thread(app, "b"):  # a batch each, run side by side
        assert [res.get(timeout=10) for res in results] == list(range(40))
    runs = spans("run tests.apps.traced.nap")
    assert len(runs) == 40 and {s.attributes["fastq.task.outcome"] for s in runs} == {"success"}
    sends = {s.context.span_id for s in spans("send tests.apps.traced.nap")}
    assert {_parent_of(s) for s in runs} == sends


def test_a_celery_app_is_traced_the_same_and_its_request_sees_the_context(spans):
    celery_app = Celery("traced_celery", broker="memory://")
    celery_app.add_middleware(Tracing(tracer_provider=traced.provider))

    @celery_app.task(bind=True, name="traced_celery.parent_header")
    def parent_header(self):
        return self.request.traceparent

    res = parent_header.delay()
    drain(celery_app)
    [send] = spans("send traced_celery.parent_header")
    [run] = spans("run traced_celery.parent_header")
    assert _parent_of(run) == send.context.span_id
    assert res.get(timeout=1).split("-")[1:3] == [f"{send.context.trace_id:032x}",
                                                  f"{send.context.span_id:016x}"]


traced_worker = worker_fixture("tests.apps.traced_worker", 2, "worker_app")
worker_app = app_fixture("tests.apps.traced_worker")


def test_a_forked_workers_spans_are_flushed_as_it_stops(worker_app, traced_worker, r, tmp_path):
    log = tmp_path / "spans.jsonl"
    w = traced_worker(env={"FASTQ_SPAN_LOG": str(log)})
    with traced.tracer.start_as_current_span("request") as request:
        results = [traced_worker_app.add.delay(i, i) for i in range(4)]
    assert [res.get(timeout=20) for res in results] == [0, 2, 4, 6]
    assert not log.exists()  # still buffered in the children's batch processors
    assert w.stop(signal.SIGTERM) == 0
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    runs = [row for row in rows if row["name"] == "run tests.apps.traced_worker.add"]
    assert len(runs) == 4 and {row["outcome"] for row in runs} == {"success"}
    assert {row["trace_id"] for row in runs} == {request.get_span_context().trace_id}
    assert os.getpid() not in {row["pid"] for row in runs}
