"""Figures read at scrape time, in the supervisor: nothing is counted for them on a task's path.

Every worker reports its own pool (``celery_worker_up``, ``celery_worker_tasks_active``). The
queue-wide figures (``celery_queue_length``, worker and process counts per queue, fastq's depth /
pending / oldest age per queue and priority, delayed and dead letters, running workflows) are the
same whichever worker reads them, so only the worker holding the ``metrics`` role (a Redis lease
renewed at each scrape) reports them: a dashboard summing by queue counts each queue once.
``fastq web``'s ``/metrics`` takes part in the same role with :class:`QueueCollector`, so the
queue figures can be scraped from the web server where no worker serves metrics.
"""
from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING, Any

import msgpack
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from fastq import keys

if TYPE_CHECKING:
    from collections.abc import Iterator

ROLE = "metrics"
ROLE_TTL_MS = 60_000  # a reporter that stops scraping hands the role on within this
GRAPHS_COUNTED = 1000  # running workflows whose nodes a scrape counts (one HMGET each)


class QueueCollector:
    """The queue-wide figures, reported while ``holder`` holds the metrics role."""

    def __init__(self, broker: Any, holder: str):
        self.broker = broker  # a connection of its own (this runs in the server's thread)
        self.holder = holder

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            reporting = self.broker.hold_role(ROLE, self.holder, ROLE_TTL_MS)
        except Exception:  # noqa: BLE001 - Redis down: what else is served still goes out
            return
        if reporting:
            yield from self._queues()

    def _queues(self) -> Iterator[GaugeMetricFamily]:
        broker = self.broker
        queues = sorted(broker.queues())
        waiting = GaugeMetricFamily("celery_queue_length", "Messages waiting in the queue.",
                                    labels=["queue_name"])
        depth = GaugeMetricFamily("fastq_queue_depth", "Entries in the queue's stream "
                                  "(waiting and being run).", labels=["queue_name", "priority"])
        pending = GaugeMetricFamily("fastq_queue_pending", "Entries delivered and not yet "
                                    "acknowledged.", labels=["queue_name", "priority"])
        oldest = GaugeMetricFamily("fastq_queue_oldest_age_seconds", "Age of the oldest entry.",
                                   labels=["queue_name", "priority"])
        delayed = GaugeMetricFamily("fastq_queue_delayed", "Messages in the delayed set.",
                                    labels=["queue_name"])
        dead = GaugeMetricFamily("fastq_dead_letters", "Messages in the dead-letter queue.",
                                 labels=["queue_name"])
        for queue in queues:
            stats = broker.stats(queue)
            waiting.add_metric([queue], sum(max(s.depth - s.pending, 0) for s in stats))
            for s in stats:
                level = keys.PRIORITY_NAMES[s.level]
                depth.add_metric([queue, level], s.depth)
                pending.add_metric([queue, level], s.pending)
                oldest.add_metric([queue, level], s.oldest_age_ms / 1000.0)
            delayed.add_metric([queue], broker.delayed_count(queue))
            dead.add_metric([queue], broker.dead_letter_count(queue))
        yield from (waiting, depth, pending, oldest, delayed, dead)
        yield from self._consumers(queues)
        graphs = GaugeMetricFamily("fastq_workflows_running", "Workflows not yet finished.")
        graphs.add_metric([], broker.running_graph_count())
        yield graphs
        nodes = GaugeMetricFamily("fastq_workflow_nodes", "Nodes of running workflows, by state "
                                  "(waiting: a dependency unmet; running: sent, no outcome yet).",
                                  labels=["state"])
        for state, count in zip(("waiting", "running"), broker.graph_node_counts(GRAPHS_COUNTED),
                                strict=True):
            nodes.add_metric([state], count)
        yield nodes

    def _consumers(self, queues: list[str]) -> Iterator[GaugeMetricFamily]:
        """Workers and children reading each queue, from the children's heartbeats."""
        workers: dict[str, set[str]] = defaultdict(set)
        processes: dict[str, int] = defaultdict(int)
        for raw in self.broker.workers():
            beat = msgpack.unpackb(raw)
            for queue in beat.get("queues", ()):
                workers[queue].add(beat["consumer"].rsplit(":", 1)[0])
                processes[queue] += 1
        worker_count = GaugeMetricFamily("celery_active_worker_count",
                                         "Workers reading the queue.", labels=["queue_name"])
        process_count = GaugeMetricFamily("celery_active_process_count",
                                          "Worker processes reading the queue.",
                                          labels=["queue_name"])
        for queue in sorted(set(queues) | set(workers)):
            worker_count.add_metric([queue], len(workers[queue]))
            process_count.add_metric([queue], processes[queue])
        yield worker_count
        yield process_count


class WorkerCollector(QueueCollector):
    """A worker's own pool, then (while it holds the role) the queue-wide figures."""

    def __init__(self, worker: Any, broker: Any, flower: bool = False):
        super().__init__(broker, worker.name)
        self.worker = worker
        self.flower = flower

    def collect(self) -> Iterator[GaugeMetricFamily]:
        yield from self._pool()
        yield from super().collect()

    def _pool(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        host = self.worker.name
        overseer = self.worker.overseer
        for name, doc, value in (
                ("fastq_lease_renewals", "Leases renewed by the supervisor (entries).",
                 overseer.renewed),
                ("fastq_watchdog_restarts", "Children restarted because their fetch loop went "
                 "quiet.", overseer.watchdog_restarts)):
            counter = CounterMetricFamily(name, doc, labels=["hostname"])
            counter.add_metric([host], value)
            yield counter
        busy = self.worker.busy_children()
        for name, doc, value in (
                ("celery_worker_up", "1 while the worker runs.", 1),
                ("celery_worker_tasks_active", "Tasks the worker is running now.", busy)):
            family = GaugeMetricFamily(name, doc, labels=["hostname"])
            family.add_metric([host], value)
            yield family
        if self.flower:
            for name, doc, value in (
                    ("flower_worker_online", "Worker online status", 1),
                    ("flower_worker_number_of_currently_executing_tasks",
                     "Number of tasks currently executing at a worker", busy)):
                family = GaugeMetricFamily(name, doc, labels=["worker"])
                family.add_metric([host], value)
                yield family
