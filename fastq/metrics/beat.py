"""A beat's fires, misses and leadership: for ``fastq beat --metrics-port N`` read at scrape time
from the counters the beat keeps (nothing is counted for Prometheus on its own path); for the
beat of ``fastq worker -B --metrics-port N`` (a process the worker forks) written into
prometheus-client's multiprocess files once a second, so the worker's ``/metrics`` serves them."""
from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

if TYPE_CHECKING:
    from collections.abc import Iterator


# (name, help, labels) of the beat's figures, the same from both ways of exporting them
FIRES = ("fastq_beat_fires", "Periodic tasks this beat sent.", ["entry"])
MISSES = ("fastq_beat_misses", "Instants due that were not sent (reason: downtime, stalled, "
          "failed).", ["entry", "reason"])
LEADER = ("fastq_beat_leader", "1 while this beat holds the leader lease (and fires).", ["beat"])


class BeatCollector:
    def __init__(self, beat: Any):
        self.beat = beat

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        beat = self.beat
        fires = CounterMetricFamily(*FIRES[:2], labels=FIRES[2])
        for name in beat.entries:
            fires.add_metric([name], beat.fires[name])
        yield fires
        misses = CounterMetricFamily(*MISSES[:2], labels=MISSES[2])
        for (name, why), count in sorted(beat.misses.items()):
            misses.add_metric([name, why], count)
        yield misses
        leader = GaugeMetricFamily(*LEADER[:2], labels=LEADER[2])
        leader.add_metric([beat.id], 1 if beat.is_leader else 0)
        yield leader


def serve(beat: Any, port: int, host: str = "0.0.0.0") -> Any:  # noqa: S104
    """Start serving ``/metrics`` for ``beat`` from a thread; returns the HTTP server."""
    from prometheus_client import CollectorRegistry, start_http_server

    registry = CollectorRegistry()
    registry.register(BeatCollector(beat))
    server, _thread = start_http_server(port, addr=host, registry=registry)
    return server


class BeatFiles:
    """The embedded beat's figures, the same names, into the worker's multiprocess files (from a
    thread of the beat's process, every ``every`` s, and once more as it stops)."""

    def __init__(self, beat: Any, every: float = 1.0):
        from prometheus_client import Counter, Gauge

        self.beat, self.every = beat, every
        self.fires = Counter(*FIRES, registry=None)
        self.misses = Counter(*MISSES, registry=None)
        self.leader = Gauge(*LEADER, registry=None, multiprocess_mode="livemax")
        self._written: dict[Any, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="fastq-beat-metrics")

    def start(self) -> None:
        for name in self.beat.entries:  # every entry shown from the start, at 0
            self.fires.labels(name)
        self.write()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.write()

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.write()

    def write(self) -> None:
        beat, written = self.beat, self._written
        for name, count in list(beat.fires.items()):
            if count > written.get(name, 0):
                self.fires.labels(name).inc(count - written.get(name, 0))
                written[name] = count
        for (name, why), count in list(beat.misses.items()):
            if count > written.get((name, why), 0):
                self.misses.labels(name, why).inc(count - written.get((name, why), 0))
                written[name, why] = count
        self.leader.labels(beat.id).set(1 if beat.is_leader else 0)
