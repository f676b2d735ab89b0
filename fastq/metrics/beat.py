"""``fastq beat --metrics-port N``: a beat's fires and misses, read at scrape time from the
counters the beat keeps (nothing is counted for Prometheus on its own path)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

if TYPE_CHECKING:
    from collections.abc import Iterator


class BeatCollector:
    def __init__(self, beat: Any):
        self.beat = beat

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        beat = self.beat
        fires = CounterMetricFamily("fastq_beat_fires", "Periodic tasks this beat sent.",
                                    labels=["entry"])
        for name in beat.entries:
            fires.add_metric([name], beat.fires[name])
        yield fires
        misses = CounterMetricFamily(
            "fastq_beat_misses", "Instants due that were not sent (reason: downtime, stalled, "
            "failed).", labels=["entry", "reason"])
        for (name, why), count in sorted(beat.misses.items()):
            misses.add_metric([name, why], count)
        yield misses
        leader = GaugeMetricFamily("fastq_beat_leader", "1 while this beat holds the leader "
                                   "lease (and fires).", labels=["beat"])
        leader.add_metric([beat.id], 1 if beat.is_leader else 0)
        yield leader


def serve(beat: Any, port: int, host: str = "0.0.0.0") -> Any:  # noqa: S104
    """Start serving ``/metrics`` for ``beat`` from a thread; returns the HTTP server."""
    from prometheus_client import CollectorRegistry, start_http_server

    registry = CollectorRegistry()
    registry.register(BeatCollector(beat))
    server, _thread = start_http_server(port, addr=host, registry=registry)
    return server
