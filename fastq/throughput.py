"""Throughput gates: fastq's rate on a hot path as a share of the raw Redis ceiling of the same run.

A gate runs ``n`` tasks through fastq (a real ``fastq worker`` subprocess where tasks must run),
measures the same Redis work with plain redis-py (:class:`fastq.broker.ceiling.Ceiling`), and
compares fastq's share of that ceiling with the share a baseline run recorded: machines are noisy,
but a slower machine slows both, so the share moves only when fastq does. The pytest fixture that
drives this is in ``fastq.pytest_throughput``; docs/testing.md ("Gating throughput") shows its use.
"""
from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgpack

if TYPE_CHECKING:
    from fastq.app import App

STOP_TIMEOUT_S = 20.0
_names = itertools.count(1)


class GateFailed(AssertionError):
    """fastq's share of the Redis ceiling dropped by more than the tolerance below the baseline."""


@dataclass(frozen=True)
class GateResult:
    """One gate's measurement: best seconds for ``n`` tasks through fastq and through raw Redis."""

    name: str
    n: int
    seconds: float
    ceiling_seconds: float

    @property
    def rate(self) -> float:
        return self.n / self.seconds

    @property
    def ceiling_rate(self) -> float:
        return self.n / self.ceiling_seconds

    @property
    def share(self) -> float:
        """fastq's rate over the ceiling's (usually well below 1: fastq does more per task)."""
        return self.ceiling_seconds / self.seconds

    def extra_info(self) -> dict[str, float]:
        """What pytest-benchmark saves with the benchmark (``--benchmark-save``, ``--benchmark-json``)."""
        return {"n": self.n, "fastq_per_s": round(self.rate, 1),
                "ceiling_per_s": round(self.ceiling_rate, 1), "share": round(self.share, 5)}

    def check(self, baseline_share: float | None, tolerance: float) -> None:
        """Raise :class:`GateFailed` when the share is below ``baseline_share * (1 - tolerance)``."""
        if baseline_share is None:
            return
        floor = baseline_share * (1 - tolerance)
        if self.share < floor:
            raise GateFailed(
                f"{self.name}: fastq ran at {self.share:.1%} of the raw Redis ceiling "
                f"({self.rate:,.0f}/s vs {self.ceiling_rate:,.0f}/s), below the baseline's "
                f"{baseline_share:.1%} less {tolerance:.0%} (floor {floor:.1%})")


def saved_runs(storage: Path) -> list[Path]:
    """pytest-benchmark's saved runs under ``storage`` (``.benchmarks``), oldest first."""
    return sorted(storage.glob("*/*.json"), key=lambda p: (p.stat().st_mtime, p.name))


def baseline_shares(path: Path) -> dict[str, float]:
    """benchmark fullname -> share, from a pytest-benchmark JSON file (a saved run or
    ``--benchmark-json`` output). Benchmarks without a recorded share are left out."""
    try:
        data = json.loads(path.read_text())
        benchmarks = data["benchmarks"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path} is not a pytest-benchmark JSON file: {exc}") from exc
    return {b["fullname"]: float(b["extra_info"]["share"]) for b in benchmarks
            if "share" in (b.get("extra_info") or {})}


class GateWorker:
    """``python -m fastq -A <module> worker -c N -Q <queue>`` as a subprocess on the app's broker,
    with this process's ``sys.path`` as its ``PYTHONPATH`` (it imports the same fastq and tasks).
    ``start()`` returns once every child is in its fetch loop; ``stop()`` stops it warm."""

    def __init__(self, app: App, module: str, queue: str, concurrency: int = 2):
        self.app = app
        self.module = module
        self.queue = queue
        self.concurrency = concurrency
        self.name = f"gate{next(_names)}-{os.getpid()}"
        self.proc: subprocess.Popen | None = None
        self.log = tempfile.NamedTemporaryFile(prefix=f"fastq-{self.name}-", suffix=".log",
                                               delete=False)

    def start(self, timeout: float = 30.0) -> GateWorker:
        env = {**os.environ, "FASTQ_BROKER_URL": self.app.broker.url,
               "PYTHONPATH": os.pathsep.join(p or os.getcwd() for p in sys.path)}
        cmd = [sys.executable, "-m", "fastq", "-A", self.module, "worker",
               "-c", str(self.concurrency), "-Q", self.queue, "-n", self.name, "-l", "warning"]
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=env,
                                     start_new_session=True)
        deadline = time.monotonic() + timeout
        while not self._ready():
            if self.proc.poll() is not None:
                raise RuntimeError(f"gate worker exited ({self.proc.returncode}):\n{self.output()}")
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"gate worker not ready in {timeout} s:\n{self.output()}")
            time.sleep(0.05)
        return self

    def _ready(self) -> bool:
        for raw in self.app.broker.health_reports():
            rec = msgpack.unpackb(raw)
            if rec["worker"] == self.name:
                children = rec["children"]
                return len(children) == self.concurrency and all(c.get("looping") for c in children)
        return False

    def output(self) -> str:
        return Path(self.log.name).read_text(errors="replace")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()
        Path(self.log.name).unlink(missing_ok=True)

    def __enter__(self) -> GateWorker:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def wait_drained(app: App, queue: str, workers: list[GateWorker], timeout: float = 60.0) -> None:
    """Return once ``queue`` holds nothing ready or pending (every task ran and was acked); raise
    with the worker's output when one of ``workers`` exited or ``timeout`` passed."""
    deadline = time.monotonic() + timeout
    broker = app.broker
    while left := sum(st.depth + st.pending for st in broker.stats(queue)):
        for worker in workers:
            if worker.proc is not None and worker.proc.poll() is not None:
                raise RuntimeError(f"gate worker exited ({worker.proc.returncode}) with {left} "
                                   f"message(s) left in {queue!r}:\n{worker.output()}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"queue {queue!r}: {left} message(s) not drained after {timeout} s")
        time.sleep(0.002)

