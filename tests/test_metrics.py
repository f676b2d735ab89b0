"""Prometheus metrics of a real worker (``--metrics-port``): celery-exporter's names and labels,
Flower's behind ``--flower-metrics``, fastq's own; queue-wide figures from one worker only."""
from __future__ import annotations

import socket
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import app_fixture, wait_for

app = app_fixture("tests.apps.basic")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _scrape(port: int) -> dict[tuple, float]:
    """{(sample name, sorted labels): value} of one scrape."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def _value(samples: dict, metric: str, **labels: str) -> float | None:
    return samples.get((metric, tuple(sorted(labels.items()))))


def _start(start_worker, *extra: str):
    port = _free_port()
    w = start_worker(concurrency=2, extra=["--metrics-port", str(port), "--metrics-host",
                                           "127.0.0.1", *extra])
    wait_for(lambda: _try_scrape(port), 10, message="the metrics endpoint")
    return w, port


def _try_scrape(port: int):
    try:
        return _scrape(port)
    except OSError:
        return None


def test_task_metrics_have_celery_exporters_names(app, start_worker, r):
    from tests.apps.basic import add, fail, retry_once

    w, port = _start(start_worker, "--flower-metrics")
    results = [add.delay(i, 1) for i in range(20)]
    assert [res.get(timeout=10) for res in results] == [i + 1 for i in range(20)]
    failed = fail.delay("ValueError")
    failed.get(timeout=10, propagate=False)
    assert retry_once.delay().get(timeout=10) == 1
    task = {"hostname": w.name, "queue_name": "default"}

    def settled():
        s = _scrape(port)
        done = _value(s, "celery_task_succeeded_total", name=retry_once.name, **task)
        return s if done == 1 else None

    s = wait_for(settled, 10, message="the outcomes flushed into the metrics")
    assert _value(s, "celery_task_succeeded_total", name=add.name, **task) == 20
    assert _value(s, "celery_task_received_total", name=add.name, **task) == 20
    assert _value(s, "celery_task_started_total", name=add.name, **task) == 20
    assert _value(s, "celery_task_failed_total", name=fail.name, exception="ValueError",
                  **task) == 1
    assert _value(s, "celery_task_succeeded_total", name=fail.name, **task) == 0  # shown at 0
    assert _value(s, "celery_task_retried_total", name=retry_once.name, **task) == 1
    assert _value(s, "celery_task_received_total", name=retry_once.name, **task) == 2
    assert _value(s, "celery_task_failed_total", name=retry_once.name, exception="Retry",
                  **task) is None  # a retry is not a failure
    assert _value(s, "celery_task_runtime_count", name=add.name, **task) == 20
    assert _value(s, "celery_task_runtime_bucket", name=add.name, le="+Inf", **task) == 20
    assert 0 < _value(s, "celery_task_runtime_sum", name=add.name, **task) < 20
    assert _value(s, "fastq_task_queue_wait_seconds_count", name=add.name,
                  queue_name="default") == 20
    assert _value(s, "fastq_task_latency_seconds_count", name=add.name,
                  queue_name="default") == 20
    assert _value(s, "celery_worker_up", hostname=w.name) == 1
    assert _value(s, "celery_worker_tasks_active", hostname=w.name) == 0
    assert _value(s, "flower_events_total", worker=w.name, type="task-succeeded",
                  task=add.name) == 20
    assert _value(s, "flower_task_runtime_seconds_count", worker=w.name, task=add.name) == 20
    assert _value(s, "flower_worker_online", worker=w.name) == 1
    assert _value(s, "fastq_broker_errors_total", hostname=w.name) == 0  # shown, at 0
    assert _value(s, "fastq_lease_renewals_total", hostname=w.name) >= 0


def test_flowers_prefetch_metrics_follow_a_batch(app, start_worker, r):
    """Five 0.3 s tasks read in one batch: while they run, some wait in it (prefetched); the
    last one started waited for the ones before it; once all ran, none is prefetched."""
    from tests.apps.basic import slow_record

    results = [slow_record.delay(i, 0.3) for i in range(5)]  # queued first: one read takes all
    w, port = _start(start_worker, "--flower-metrics")
    labels = {"worker": w.name, "task": slow_record.name}
    seen = []

    def all_done():
        seen.append(_value(_scrape(port), "flower_worker_prefetched_tasks", **labels) or 0)
        return all(res.ready() for res in results)

    wait_for(all_done, 20, message="the five runs")
    assert max(seen) >= 1  # some were waiting in the batch while another ran
    assert [res.get(timeout=5) for res in results] == list(range(5))

    def settled():
        s = _scrape(port)
        done = _value(s, "celery_task_succeeded_total", name=slow_record.name,
                      hostname=w.name, queue_name="default") == 5
        return s if done and _value(s, "flower_worker_prefetched_tasks", **labels) == 0 else None

    s = wait_for(settled, 10, message="nothing prefetched once the worker is idle")
    # five over at most two children: the last one a child started waited for two runs or more
    assert 0.5 <= _value(s, "flower_task_prefetch_time_seconds", **labels) < 30


def test_a_killed_childs_prefetched_tasks_are_not_counted(app, start_worker, r):
    import os
    import signal

    from tests.apps.basic import slow_record

    results = [slow_record.delay(i, 0.3) for i in range(8)]
    w, port = _start(start_worker, "--flower-metrics")
    labels = {"worker": w.name, "task": slow_record.name}
    wait_for(lambda: (_value(_scrape(port), "flower_worker_prefetched_tasks", **labels) or 0) >= 2,
             10, message="tasks waiting in a batch")
    for pid in w.child_pids(r).values():  # its batch is run again by its replacement
        os.kill(pid, signal.SIGKILL)
    wait_for(lambda: all(res.ready() for res in results), 30, message="the runs, again")

    def nothing_prefetched():
        return _value(_scrape(port), "flower_worker_prefetched_tasks", **labels) == 0

    wait_for(nothing_prefetched, 10, message="the dead children's counts gone")


def test_async_runs_are_timed_like_sync_ones(app, start_worker, r):
    from tests.apps.basic import async_add

    results = [async_add.delay(i, 1) for i in range(6)]  # sent first: one batch, run together
    w, port = _start(start_worker)
    assert [res.get(timeout=10) for res in results] == [i + 1 for i in range(6)]
    task = {"name": async_add.name, "hostname": w.name, "queue_name": "default"}

    def settled():
        s = _scrape(port)
        return s if _value(s, "celery_task_succeeded_total", **task) == 6 else None

    s = wait_for(settled, 10, message="the async runs counted")
    assert _value(s, "celery_task_runtime_count", **task) == 6
    # each sleeps 0.01 s: timed from its own coroutine's start to its end
    assert 0.06 <= _value(s, "celery_task_runtime_sum", **task) < 30
    assert _value(s, "fastq_task_queue_wait_seconds_count", name=async_add.name,
                  queue_name="default") == 6


def test_rate_limit_deferrals_are_counted(app, start_worker, r):
    from tests.apps.basic import add

    w, port = _start(start_worker)
    app.control.rate_limit(add.name, "1/m", reply=True, timeout=2.0)
    [add.delay(i, i) for i in range(3)]
    wait_for(lambda: _value(_scrape(port), "fastq_deferred_total", hostname=w.name) == 2, 10,
             message="two runs deferred by the rate limit")


def test_queue_wide_metrics_come_from_one_worker(app, start_worker, r):
    from tests.apps.basic import add

    w1, port1 = _start(start_worker)
    w2, port2 = _start(start_worker)
    for i in range(7):
        add.apply_async((i, i), queue="nobody-reads")
    add.apply_async((1, 1), queue="nobody-reads", countdown=600)
    add.apply_async((1, 1), queue="nobody-reads", priority="high")
    first, second = _scrape(port1), _scrape(port2)
    reporting = [s for s in (first, second)
                 if _value(s, "celery_queue_length", queue_name="nobody-reads") is not None]
    assert len(reporting) == 1  # the worker holding the metrics role
    [s] = reporting
    assert _value(s, "celery_queue_length", queue_name="nobody-reads") == 8
    assert _value(s, "fastq_queue_depth", queue_name="nobody-reads", priority="normal") == 7
    assert _value(s, "fastq_queue_depth", queue_name="nobody-reads", priority="high") == 1
    assert _value(s, "fastq_queue_delayed", queue_name="nobody-reads") == 1
    assert _value(s, "fastq_queue_oldest_age_seconds", queue_name="nobody-reads",
                  priority="normal") >= 0
    assert _value(s, "celery_active_worker_count", queue_name="default") == 2
    assert _value(s, "celery_active_process_count", queue_name="default") == 4
    assert _value(s, "celery_active_worker_count", queue_name="nobody-reads") == 0
    for samples, w in ((first, w1), (second, w2)):  # each worker reports its own pool
        assert _value(samples, "celery_worker_up", hostname=w.name) == 1


def test_outcome_counters_sum_exactly_across_two_workers_of_two_children(app, start_worker, r):
    """The acceptance check: succeeded, failed and retried sum to exactly what happened."""
    from tests.apps.basic import add, fail, retry_once

    (w1, port1), (w2, port2) = _start(start_worker), _start(start_worker)
    results = [add.delay(i, i) for i in range(200)] + [fail.delay("KeyError") for _ in range(30)]
    results += [retry_once.delay() for _ in range(20)]
    for res in results:
        res.get(timeout=30, propagate=False)

    def total(samples_list, metric, name):
        return sum(v for s in samples_list for (m, labels), v in s.items()
                   if m == metric and dict(labels).get("name") == name)

    def settled():
        both = [_scrape(port1), _scrape(port2)]
        done = total(both, "celery_task_succeeded_total", retry_once.name)
        return both if done == 20 and total(both, "celery_task_succeeded_total",
                                           add.name) == 200 else None

    both = wait_for(settled, 15, message="every outcome flushed into the metrics")
    assert total(both, "celery_task_failed_total", fail.name) == 30
    assert total(both, "celery_task_retried_total", retry_once.name) == 20
    assert total(both, "celery_task_failed_total", add.name) == 0
    hosts = {dict(labels)["hostname"] for s in both for (m, labels), v in s.items()
             if m == "celery_task_succeeded_total" and v}
    assert hosts == {w1.name, w2.name}  # both workers ran some



def test_workflow_nodes_are_counted_waiting_and_running(app, start_worker, r):
    from fastq import chain, chord, group
    from tests.apps.basic import add, fail, slow_record

    w, port = _start(start_worker)

    def nodes_become(waiting: int, running: int, message: str) -> dict:
        def seen():
            s = _scrape(port)
            counts = (_value(s, "fastq_workflow_nodes", state="waiting"),
                      _value(s, "fastq_workflow_nodes", state="running"))
            return s if counts == (waiting, running) else None
        return wait_for(seen, 10, message=message)

    # a chord of two slow nodes, then a slow link and one more: two running, three waiting
    flow = chain(chord([slow_record.si(1, 1.0), slow_record.si(2, 1.0)], add.si(1, 1)),
                 slow_record.si(3, 1.5), add.si(3, 3))
    res = flow.apply_async()
    s = nodes_become(3, 2, "two header nodes running, the body and two links waiting")
    assert _value(s, "fastq_workflows_running") == 1
    nodes_become(1, 1, "the header and body done: the slow link running, the last one waiting")
    assert res.get(timeout=10) == 6
    s = nodes_become(0, 0, "no node left once the workflow finished")
    assert _value(s, "fastq_workflows_running") == 0

    # a failure settles what waited on it while the rest of the graph still runs
    group(chain(fail.si("ValueError"), add.si(1, 1), add.si(2, 2)),
          slow_record.si(4, 2.0)).apply_async()
    nodes_become(0, 1, "the failed chain's links counted out, the slow node still running")
    nodes_become(0, 0, "the workflow finished")
