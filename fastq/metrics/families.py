"""The metric families a process records into, created on first use (after the multiprocess
directory is set: see fastq/metrics/server.py)."""
from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import Counter, Gauge, Histogram

TASK_LABELS = ("name", "hostname", "queue_name")
# the events celery-exporter counts, by the Celery event type that names them
EVENTS = ("task-sent", "task-received", "task-started", "task-succeeded", "task-failed",
          "task-rejected", "task-revoked", "task-retried")
BUCKETS = Histogram.DEFAULT_BUCKETS  # celery-exporter's default
WAIT_BUCKETS = (.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0,
                3600.0, float("inf"))


ENGINE = {  # what a child counts besides tasks (fastq/worker/child.py engine_counts)
    "reclaimed": "Messages taken over from a worker whose lease ran out.",
    "poison": "Messages dead-lettered after max_deliveries deliveries.",
    "deferred": "Runs put off through the delayed set (rate limits, DeferMessage).",
    "broker_errors": "Redis calls of a child that failed and were retried.",
}


@dataclass
class Families:
    counters: dict[str, Counter]  # event type -> celery_task_<event>_total
    runtime: Histogram  # celery_task_runtime (successful runs, as celery-exporter)
    wait: Histogram  # fastq_task_queue_wait_seconds: enqueued (stream id) to started
    latency: Histogram  # fastq_task_latency_seconds: enqueued to finished
    engine: dict[str, Counter]  # Child.engine_counts key -> fastq_<key>_total
    flower_events: Counter | None
    flower_runtime: Histogram | None
    # the last started task's wait in its batch (per child; the most recent live one is shown),
    # and the tasks read and not started yet (summed over live children)
    flower_prefetch_time: Gauge | None = None
    flower_prefetched: Gauge | None = None


def create(flower: bool) -> Families:
    counters = {}
    for event in EVENTS:
        short = event.split("-", 1)[1]
        labels = (*TASK_LABELS, "exception") if event == "task-failed" else TASK_LABELS
        counters[event] = Counter(f"celery_task_{short}", f"Tasks {short} (Celery event "
                                  f"{event}).", labels, registry=None)
    runtime = Histogram("celery_task_runtime", "Run time of successful tasks, seconds.",
                        TASK_LABELS, buckets=BUCKETS, registry=None)
    wait = Histogram("fastq_task_queue_wait_seconds", "From enqueued to started, seconds.",
                     ("name", "queue_name"), buckets=WAIT_BUCKETS, registry=None)
    latency = Histogram("fastq_task_latency_seconds", "From enqueued to finished, seconds.",
                        ("name", "queue_name"), buckets=WAIT_BUCKETS, registry=None)
    engine = {key: Counter(f"fastq_{key}", doc, ("hostname",), registry=None)
              for key, doc in ENGINE.items()}
    if not flower:
        return Families(counters, runtime, wait, latency, engine, None, None)
    return Families(
        counters, runtime, wait, latency, engine,
        Counter("flower_events", "Number of events", ("worker", "type", "task"), registry=None),
        Histogram("flower_task_runtime_seconds", "Task runtime", ("worker", "task"),
                  buckets=BUCKETS, registry=None),
        Gauge("flower_task_prefetch_time_seconds", "The time the task spent waiting at the "
              "worker to be executed", ("worker", "task"), registry=None,
              multiprocess_mode="livemostrecent"),
        Gauge("flower_worker_prefetched_tasks", "Number of tasks of given type prefetched at "
              "a worker", ("worker", "task"), registry=None, multiprocess_mode="livesum"))
