"""One adapter per system a bench measures: fastq, Celery 5, and plain redis-py (the ceiling).

An adapter says how to start the system's worker and know it is ready (the harness runs it), how
deep its queue is, how to park the queue while a worker gets ready, and how to send. The
measurements (throughput.py, delay_precision.py) only talk to adapters.

A fastq adapter can stand for a fastq other than the one this process imports: ``path`` is put
first on ``PYTHONPATH`` of its worker and producer subprocesses (e.g. a git worktree of an older
commit), and ``app_module`` names the app the worker runs and the producer sends with (e.g. one that
installs a middleware). bench/README.md shows how to compare such variants in one run.
"""
from __future__ import annotations

import importlib
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import redis
from harness import BenchError, bench_env

QUEUE = "bench"  # both apps' default queue (see bench_fastq_app.py, bench_celery_app.py)
ROUNDTRIP_TIMEOUT_S = 10.0
TASK_NAMES = ("noop", "noop_stored", "echo")  # what each throughput app module defines


class _AppSystem:
    """What the fastq and Celery adapters share: a task module imported here, sent Celery-style."""
    name: str
    module: ModuleType

    @property
    def tasks(self) -> dict:
        return {name: getattr(self.module, name) for name in TASK_NAMES}

    def send_one(self, task, arg) -> str:
        return task.delay(arg).id

    def roundtrip(self, value):
        return self.module.echo.delay(value).get(timeout=ROUNDTRIP_TIMEOUT_S)


class FastqSystem(_AppSystem):
    """fastq. ``path``: a directory put first on ``PYTHONPATH`` of the worker and of the producer
    subprocesses (another fastq checkout); ``app_module``: the module, found on bench/ or
    ``path``, whose ``app`` the worker runs and whose tasks are sent. The drain (prefill, worker,
    result states) runs wholly in subprocesses, so it works for any ``path``; the measurements
    that send from this process ((a) enqueue, (c) round trip, (d) batch) need ``path=None``."""

    def __init__(self, name: str = "fastq", path: Path | None = None,
                 app_module: str = "bench_fastq_app", queue: str = QUEUE,
                 worker_args: tuple[str, ...] = ()):
        from fastq import keys

        self.name = name
        self.worker_args = worker_args  # more flags for ``fastq worker``
        self.path = path
        self.app_module = app_module
        self.queue = queue
        self.keys = keys  # this process's key layout; a compared checkout must share it
        self._module: ModuleType | None = None
        self._settings: str | None = None

    @property
    def module(self) -> ModuleType:
        """The app module imported in this process (only for the fastq this process runs)."""
        if self.path is not None:
            raise BenchError(f"{self.name}: fastq from {self.path} runs in subprocesses only "
                             f"(the drain); this measurement sends from the bench process")
        if self._module is None:
            self._module = importlib.import_module(self.app_module)
        return self._module

    def worker_env(self) -> dict[str, str]:
        return bench_env([str(self.path)] if self.path else [])

    def _produce(self, *args: str) -> list[str]:
        """Run fastq_producer.py with this adapter's fastq and app module; its output lines."""
        cmd = [sys.executable, "fastq_producer.py", self.app_module, *args]
        done = subprocess.run(cmd, cwd=Path(__file__).parent, env=self.worker_env(),
                              capture_output=True, text=True)
        if done.returncode:
            raise BenchError(f"{self.name} producer {args[0]} failed: {done.stderr.strip()[-800:]}")
        return done.stdout.splitlines()

    def settings(self) -> str:
        if self._settings is None:
            self._settings = self._produce("settings")[0] + f"; app module {self.app_module}"
        return self._settings

    def worker_cmd(self, concurrency: int, hostname: str) -> list[str]:
        return [sys.executable, "-m", "fastq", "-A", self.app_module, "worker",
                "-c", str(concurrency), "-Q", self.queue, "-n", hostname, "-l", "warning",
                *self.worker_args]

    def clear_ready(self, r: redis.Redis) -> None:
        """Nothing: readiness is per hostname, and every worker gets a fresh one."""

    def is_ready(self, r: redis.Redis, concurrency: int, hostname: str) -> bool:
        """Every child has written its heartbeat key (``keys.worker("<hostname>:<slot>")``)."""
        beats = list(r.scan_iter(match=self.keys.worker(f"{hostname}:*"), count=10_000))
        return len(beats) >= concurrency

    def depth(self, r: redis.Redis) -> int:
        """Entries in the queue's streams: ready plus delivered-but-unacked (acked ones are XDELed)."""
        pipe = r.pipeline(transaction=False)
        for key in self.keys.streams(self.queue):
            pipe.xlen(key)
        return sum(pipe.execute())

    def result_key(self, task_id: str) -> str:
        return self.keys.result(task_id)

    def hold(self, r: redis.Redis) -> list[tuple[str, str]]:
        """Move the queued streams aside (with the consumer group a worker would have created),
        so a worker can start and get ready on an empty queue. Returns (held, real) key pairs."""
        moved = []
        for key in self.keys.streams(self.queue):
            if r.xlen(key):
                held = f"bench:held:{key}"
                r.rename(key, held)
                r.xgroup_create(held, self.keys.GROUP, "0")
                moved.append((held, key))
        return moved

    def batch_methods(self) -> dict[str, Callable]:
        return {"Task.map": lambda task, n: [res.id for res in task.map(range(n))]}

    def prefill(self, task_name: str, n: int) -> list[str]:
        return self._produce("send", task_name, str(n))

    def states(self, task_ids: list[str]) -> set[str]:
        return set(self._produce("states", *task_ids))

    def close(self) -> None:
        if self._module is not None:
            self._module.app.close()


class CelerySystem(_AppSystem):
    """Celery 5 with its Redis transport; ``app_module`` found on bench/ (its ``app``, tasks and
    ``READY_KEY``, which its ``worker_ready`` handler sets), ``worker_args`` added to the worker's."""

    def __init__(self, app_module: str = "bench_celery_app", queue: str = QUEUE,
                 worker_args: tuple[str, ...] = ()):
        from celery import group

        self.name = "Celery"
        self.app_module = app_module
        self.module = importlib.import_module(app_module)
        self.app = self.module.app
        self.queue = queue
        self.worker_args = worker_args
        self.group = group
        self._producer_app = None

    def settings(self) -> str:
        c = self.app.conf
        return (f"celery worker --pool prefork, Redis broker + Redis result backend, "
                f"task_serializer {c.task_serializer}, result_serializer {c.result_serializer}, "
                f"worker_prefetch_multiplier {c.worker_prefetch_multiplier}, "
                f"task_acks_late {c.task_acks_late}, result_expires {c.result_expires}, "
                f"worker_send_task_events {c.worker_send_task_events}, gossip/mingle/heartbeat on "
                f"(defaults); all defaults except the queue name")

    def worker_env(self) -> dict[str, str]:
        return bench_env()

    def worker_cmd(self, concurrency: int, hostname: str) -> list[str]:
        return [sys.executable, "-m", "celery", "-A", self.app_module, "worker",
                "-c", str(concurrency), "--pool", "prefork", "-Q", self.queue,
                "-n", f"{hostname}@%h", "--loglevel", "WARNING", *self.worker_args]

    def clear_ready(self, r: redis.Redis) -> None:
        r.delete(self.module.READY_KEY)

    def is_ready(self, r: redis.Redis, concurrency: int, hostname: str) -> bool:
        """The ``worker_ready`` signal handler of the app module has set its ready key."""
        return bool(r.exists(self.module.READY_KEY))

    def depth(self, r: redis.Redis) -> int:
        """Messages in the queue's list plus those delivered to a worker and not yet acked."""
        pipe = r.pipeline(transaction=False)
        pipe.llen(self.queue)
        pipe.hlen("unacked")
        return sum(pipe.execute())

    def result_key(self, task_id: str) -> bytes:
        return self.app.backend.get_key_for_task(task_id)

    def hold(self, r: redis.Redis) -> list[tuple[str, str]]:
        """Move the queue's list aside so the worker can start and get ready on an empty queue."""
        r.rename(self.queue, "bench:held")
        return [("bench:held", self.queue)]

    def batch_methods(self) -> dict[str, Callable]:
        return {"group().apply_async()": self._send_group, "apply_async loop in producer_or_acquire()":
                self._send_in_producer}

    def _send_group(self, task, n: int) -> list[str]:
        return [res.id for res in self.group(task.s(i) for i in range(n)).apply_async().results]

    def _send_in_producer(self, task, n: int) -> list[str]:
        with self.app.producer_or_acquire() as producer:
            return [task.apply_async((i,), producer=producer).id for i in range(n)]

    @property
    def producer_app(self):
        """Pre-filling (b) goes through an app without a result backend: the Redis backend would
        otherwise SUBSCRIBE this process to every task's result channel, and the unread messages
        would pile up in Redis for the rest of the run. The worker stores results regardless
        (the task does not ignore them)."""
        if self._producer_app is None:
            from celery import Celery

            self._producer_app = Celery("bench-prefill", broker=self.module.URL)
            self._producer_app.conf.update(task_default_queue=self.queue,
                                           broker_connection_retry_on_startup=True)
        return self._producer_app

    def prefill(self, task_name: str, n: int) -> list[str]:
        name = self.tasks[task_name].name
        with self.producer_app.producer_or_acquire() as producer:
            return [self.producer_app.send_task(name, (i,), producer=producer).id
                    for i in range(n)]

    def states(self, task_ids: list[str]) -> set[str]:
        return {self.app.AsyncResult(task_id).state for task_id in task_ids}

    def close(self) -> None:
        self.app.close()
        if self._producer_app is not None:
            self._producer_app.close()


class RawRedis:
    """The ceiling of (a) and (d) on this machine: plain redis-py (+ hiredis if installed) XADDs of
    a 60-byte value to one stream, one round trip at a time or all in one pipeline. It has no
    worker; it sends through the same measurement functions as the task queues."""
    name = "raw redis-py"
    STREAM = "bench:raw"
    VALUE = b"x" * 60

    def __init__(self, r: redis.Redis):
        self.r = r
        self.tasks = {"noop": None}

    def send_one(self, _task, _arg) -> None:
        self.r.execute_command("XADD", self.STREAM, "*", "m", self.VALUE)

    def batch_methods(self) -> dict[str, Callable]:
        return {"pipelined XADD": self._pipelined}

    def _pipelined(self, _task, n: int) -> None:
        pipe = self.r.pipeline(transaction=False)
        for _ in range(n):
            pipe.execute_command("XADD", self.STREAM, "*", "m", self.VALUE)
        pipe.execute()

    def depth(self, r: redis.Redis) -> int:
        return r.xlen(self.STREAM)
