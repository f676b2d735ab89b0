"""The ``fastq_gate`` pytest fixture: gate a task's throughput on pytest-benchmark.

Registered as a pytest plugin (entry point ``fastq.pytest_throughput``; or list it in a
``conftest.py``'s ``pytest_plugins``). ``fastq_gate(app, module)`` gives a :class:`Gate` whose
methods each run one measurement (see fastq/throughput.py for what is measured and why a share):

    def test_resize_throughput(fastq_gate):
        fastq_gate(app, "proj.tasks").drain(resize, n=2000, args=("thumb.png",))

Options: ``--fastq-gate-baseline PATH|latest`` (a pytest-benchmark JSON: a ``--benchmark-save``d
run, ``latest`` for the newest in ``--benchmark-storage``), ``--fastq-gate-tolerance`` (how far
the share may drop, default 0.3), ``--fastq-gate-tasks`` (every gate's ``n``, for short runs) and
``--fastq-gate-rounds``. Without a baseline a gate only measures and records (``extra_info``).
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from fastq.broker.ceiling import Ceiling
from fastq.throughput import GateResult, GateWorker, baseline_shares, saved_runs, wait_drained

if TYPE_CHECKING:
    from fastq.app import App
    from fastq.task import Task

CEILINGS = ("send_one", "send_batch", "drain", "round_trip")
RESULT_TIMEOUT_S = 30.0


def pytest_addoption(parser: Any) -> None:
    group = parser.getgroup("fastq-gate", "fastq throughput gates (fastq_gate fixture)")
    group.addoption("--fastq-gate-baseline", metavar="PATH|latest", default=None,
                    help="pytest-benchmark JSON whose recorded shares the gates must keep "
                         "('latest': the newest saved run in --benchmark-storage)")
    group.addoption("--fastq-gate-tolerance", type=float, default=0.3, metavar="FRACTION",
                    help="fail a gate when its share of the Redis ceiling drops by more than "
                         "this fraction of the baseline's (default 0.3)")
    group.addoption("--fastq-gate-tasks", type=int, default=None, metavar="N",
                    help="run every gate with N tasks (a short run), whatever the test asks")
    group.addoption("--fastq-gate-rounds", type=int, default=3, metavar="R",
                    help="rounds per gate; the best one counts (default 3)")


def _storage(config: Any) -> Path:
    storage = config.getoption("benchmark_storage", None) or "file://./.benchmarks"
    return Path(storage.removeprefix("file://"))


_BASELINE = pytest.StashKey[dict[str, float] | None]()


def pytest_configure(config: Any) -> None:
    """Read the baseline up front: a bad option stops the run before any gate runs."""
    tolerance = config.getoption("fastq_gate_tolerance")
    if not 0 <= tolerance < 1:
        raise pytest.UsageError(f"--fastq-gate-tolerance must be in [0, 1), not {tolerance}")
    config.stash[_BASELINE] = _baseline(config, config.getoption("fastq_gate_baseline"))


def _baseline(config: Any, spec: str | None) -> dict[str, float] | None:
    if spec is None:
        return None
    if spec == "latest":
        runs = saved_runs(_storage(config))
        if not runs:
            raise pytest.UsageError(f"--fastq-gate-baseline latest: no saved run under "
                                    f"{_storage(config)} (save one with --benchmark-save)")
        path = runs[-1]
    else:
        path = Path(spec)
        if not path.is_file():
            raise pytest.UsageError(f"--fastq-gate-baseline: no file {path}")
    try:
        return baseline_shares(path)
    except ValueError as exc:
        raise pytest.UsageError(f"--fastq-gate-baseline: {exc}") from exc


@pytest.fixture(scope="session")
def fastq_gate_baseline(pytestconfig: Any) -> dict[str, float] | None:
    """benchmark fullname -> share of the baseline run, or None when no baseline is given."""
    return pytestconfig.stash[_BASELINE]


class Gate:
    """One test's throughput gate on ``app`` (workers run ``-A module``) and its ``queue``. Each
    of :meth:`send_one`, :meth:`send_batch`, :meth:`drain`, :meth:`round_trip` and
    :meth:`measure` is one pytest-benchmark benchmark, so a test calls one of them once."""

    def __init__(self, benchmark: Any, config: Any, baseline: dict[str, float] | None, app: App,
                 module: str | None, queue: str | None):
        self.benchmark = benchmark
        self.app = app
        self.module = module
        self.queue = queue or app.settings.default_queue
        self.baseline = baseline
        self.tolerance = config.getoption("fastq_gate_tolerance")
        self.tasks = config.getoption("fastq_gate_tasks")
        self.rounds = max(1, config.getoption("fastq_gate_rounds"))
        self.ceiling = Ceiling(app.broker.url)
        self._workers: dict[int, GateWorker] = {}

    def worker(self, concurrency: int) -> GateWorker:
        """The gate's running worker with ``concurrency`` children (started on first use)."""
        if concurrency not in self._workers:
            if self.module is None:
                raise pytest.UsageError("this gate runs tasks: fastq_gate(app, module) needs the "
                                        "module a worker loads the app from (fastq -A module)")
            self._workers[concurrency] = GateWorker(self.app, self.module, self.queue,
                                                    concurrency).start()
        return self._workers[concurrency]

    def measure(self, run: Callable[[int], Any], n: int, ceiling: str,
                concurrency: int | None = None,
                setup: Callable[[], None] | None = None) -> GateResult:
        """Time ``run(n)`` (best of the rounds; ``setup()`` runs untimed before each) against the
        ``ceiling`` of the same ``n`` (one of ``CEILINGS``), with a running worker of
        ``concurrency`` children unless None; record both in the benchmark's ``extra_info`` and
        check the share against the baseline."""
        if ceiling not in CEILINGS:
            raise ValueError(f"ceiling must be one of {', '.join(CEILINGS)}, not {ceiling!r}")
        n = self.tasks or n
        if n < 1:
            raise ValueError(f"a gate needs at least one task, not n={n}")
        if concurrency is not None:
            self.worker(concurrency)
        times: list[float] = []

        def timed() -> None:
            start = time.perf_counter()
            run(n)
            times.append(time.perf_counter() - start)

        self.benchmark.pedantic(timed, setup=setup, rounds=self.rounds, iterations=1)
        result = GateResult(self.benchmark.name, n, min(times),
                            getattr(self.ceiling, ceiling)(n, self.rounds))
        self.benchmark.extra_info.update(result.extra_info())
        baseline = None if self.baseline is None else self.baseline.get(self.benchmark.fullname)
        result.check(baseline, self.tolerance)
        return result

    def send_one(self, task: Task, n: int = 2000, args: tuple = ()) -> GateResult:
        """``n`` × ``task.delay(*args)`` (no worker)."""
        def run(count: int) -> None:
            for _ in range(count):
                task.apply_async(args, queue=self.queue)
        return self.measure(run, n, "send_one", setup=self._purge)

    def send_batch(self, task: Task, n: int = 10_000, args: tuple = ()) -> GateResult:
        """``n`` × ``task.delay(*args)`` inside one ``app.batch()`` (no worker)."""
        return self.measure(lambda count: self._send_batch(task, args, count), n, "send_batch",
                            setup=self._purge)

    def drain(self, task: Task, n: int = 10_000, args: tuple = (),
              concurrency: int = 2) -> GateResult:
        """``n`` tasks sent in one batch to a running ``worker -c concurrency``, until the last
        is done and acknowledged."""
        def run(count: int) -> None:
            self._send_batch(task, args, count)
            wait_drained(self.app, self.queue, list(self._workers.values()))
        return self.measure(run, n, "drain", concurrency)

    def round_trip(self, task: Task, n: int = 500, args: tuple = (),
                   concurrency: int = 1) -> GateResult:
        """``n`` × ``task.delay(*args).get()``, one after the other, on a running worker."""
        def run(count: int) -> None:
            for _ in range(count):
                task.apply_async(args, queue=self.queue).get(timeout=RESULT_TIMEOUT_S)
        return self.measure(run, n, "round_trip", concurrency)

    def _send_batch(self, task: Task, args: tuple, count: int) -> None:
        with self.app.batch():
            for _ in range(count):
                task.apply_async(args, queue=self.queue)

    def _purge(self) -> None:
        self.app.broker.purge(self.queue)

    def close(self) -> None:
        self._purge()
        for worker in self._workers.values():
            worker.stop()
        self.ceiling.close()


@pytest.fixture
def fastq_gate(benchmark: Any, pytestconfig: Any,
               fastq_gate_baseline: dict[str, float] | None) -> Iterator[Callable[..., Gate]]:
    """Factory: ``fastq_gate(app, module=None, queue=None) -> Gate`` (its workers are stopped
    at teardown)."""
    gates: list[Gate] = []

    def make(app: App, module: str | None = None, queue: str | None = None) -> Gate:
        gate = Gate(benchmark, pytestconfig, fastq_gate_baseline, app, module, queue)
        gates.append(gate)
        return gate

    yield make
    for gate in gates:
        gate.close()
