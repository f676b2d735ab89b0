"""The live snapshot: one thread in the web server reads the broker once a second and derives
per-second rates from the streams' counters, so clients of the live stream cost Redis nothing and
workers pay nothing per task.

A stream's ``entries-added`` only grows, and acked entries are deleted (XACK + XDEL), so between
two samples ``in`` = growth of entries-added and ``out`` = growth of (entries-added - length):
messages that left the stream (done, and also purged or moved to another level).
"""
from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from fastq import keys
from fastq.dlq import DeadLetter
from fastq.errors import BrokerUnavailable
from fastq.web.recent import RecentTasks
from fastq.worker.health import live_workers

if TYPE_CHECKING:
    from fastq.app import App

HISTORY = 120  # samples kept for the throughput chart
DEAD_SHOWN = 50  # dead letters in a snapshot (oldest first); the API pages through all
GRAPHS_SHOWN = 50


def dead_letter_view(dl: DeadLetter) -> dict[str, Any]:
    """A dead letter as JSON (without its envelope bytes)."""
    view = asdict(dl)
    view.pop("envelope")
    view["requeueable"] = dl.requeueable
    view["priority_name"] = keys.PRIORITY_NAMES[dl.priority] if dl.priority is not None else None
    if view["traceback"] is None and dl.errors:
        view["traceback"] = dl.errors[-1].get("traceback")
    return view


class Sampler:
    """Samples ``app``'s broker every ``interval`` seconds in a daemon thread; :attr:`latest`
    is the last snapshot (a dict ready for JSON), :attr:`seq` counts them."""

    def __init__(self, app: App, recent: RecentTasks, interval: float = 1.0):
        self.app = app
        self.recent = recent
        self.interval = interval
        self.latest: dict[str, Any] = {"at": None, "queues": [], "workers": [],
                                       "other_consumers": [], "recent": [], "dead_letters": [],
                                       "dead_letter_total": 0, "workflows": [],
                                       "throughput": [], "error": None}
        self.seq = 0
        self._last: dict[tuple[str, int], tuple[float, int, int]] = {}  # -> (t, added, out)
        self._history: deque[dict[str, float]] = deque(maxlen=HISTORY)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="fastq-web-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def sample(self) -> dict[str, Any]:
        """Take one snapshot now (a broker outage is reported in ``error``, the rest kept)."""
        try:
            snap = self._read()
        except BrokerUnavailable as exc:
            snap = {**self.latest, "at": time.time(), "error": f"broker unavailable: {exc}"}
        self.latest = snap
        self.seq += 1
        return snap

    def _first_dead(self, queues: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The first DEAD_SHOWN dead letters (by queue name, oldest first), reading no more."""
        out: list[dict[str, Any]] = []
        for q in queues:
            if q["dead_letters"] and len(out) < DEAD_SHOWN:
                entries = self.app.broker.dead_letters(q["queue"], count=DEAD_SHOWN - len(out))
                out += [dead_letter_view(DeadLetter.from_entry(q["queue"], eid, fields))
                        for eid, fields in entries]
        return out

    def _read(self) -> dict[str, Any]:
        broker = self.app.broker
        now = time.time()
        queues, total_in, total_out = [], 0.0, 0.0
        for queue in sorted(broker.queues()):
            levels = []
            for st in broker.stats(queue):
                out = st.added - st.depth
                prev = self._last.get((queue, st.level))
                self._last[(queue, st.level)] = (now, st.added, out)
                rate_in = rate_out = 0.0
                if prev is not None and now > prev[0]:
                    rate_in = max(st.added - prev[1], 0) / (now - prev[0])
                    rate_out = max(out - prev[2], 0) / (now - prev[0])
                total_in += rate_in
                total_out += rate_out
                levels.append({"level": st.level, "priority": keys.PRIORITY_NAMES[st.level],
                               "depth": st.depth, "pending": st.pending,
                               "oldest_age_s": st.oldest_age_ms / 1000,
                               "in_per_s": round(rate_in, 2), "out_per_s": round(rate_out, 2)})
            queues.append({"queue": queue, "levels": levels,
                           "dead_letters": broker.dead_letter_count(queue)})
        self._history.append({"at": now, "in_per_s": round(total_in, 2),
                              "out_per_s": round(total_out, 2)})
        records, orphans = live_workers(broker)
        self.recent.follow(self.app)
        self.recent.refresh(self.app)
        return {"at": now, "queues": queues, "workers": records, "other_consumers": orphans,
                "recent": self.recent.list(), "dead_letters": self._first_dead(queues),
                "dead_letter_total": sum(q["dead_letters"] for q in queues),
                "workflows": broker.running_graphs(GRAPHS_SHOWN),
                "throughput": list(self._history), "error": None}
