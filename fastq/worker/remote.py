"""Remote control, the worker's side: the supervisor answers ``app.control`` / ``fastq inspect``.

Commands come on one stream (``fastq:control``) that every supervisor follows from the moment it
starts, read without blocking once per loop of the supervisor; a command names its destination
workers (or none: all), and each addressed worker pushes ``{worker name: reply}`` to the
command's reply list. Replies have Celery's shapes, so ``app.control.inspect().active()`` reads as
it does with Celery. Everything here runs in the supervisor, off the children's hot path.
"""
from __future__ import annotations

import os
import socket
import time
from typing import TYPE_CHECKING, Any

import msgpack
import structlog

from fastq._core import decode_message, unpack_body
from fastq.keys import parse_stream
from fastq.ratelimit import parse_rate
from fastq.worker import health

if TYPE_CHECKING:
    from fastq.worker.supervisor import Supervisor
    from fastq.worker.tuning import Overrides

log = structlog.get_logger("fastq.remote")
REPLY_TTL_MS = 60_000


class Remote:
    """Follows the command stream for one supervisor and answers what it addresses."""

    def __init__(self, worker: Supervisor):
        self.worker = worker
        self.cursor = self.broker.control_cursor()
        self.started = time.time()

    @property
    def broker(self) -> Any:
        return self.worker.app.broker

    def poll(self) -> None:
        self.cursor, commands = self.broker.commands_since(self.cursor)
        for command_id, data in commands:
            command = msgpack.unpackb(data)
            wanted = command.get("destination")
            if wanted and self.worker.name not in wanted:
                continue
            name = command["command"]
            handler = getattr(self, f"do_{name}", None)
            try:
                answer = handler(**(command.get("arguments") or {})) if handler else \
                    {"error": f"fastq workers have no command {name!r}"}
            except Exception as exc:  # noqa: BLE001 - a bad command must not stop the worker
                answer = {"error": f"{type(exc).__name__}: {exc}"}
            if command.get("reply", True):
                self.broker.reply(command_id, msgpack.packb({self.worker.name: answer},
                                                            default=repr), REPLY_TTL_MS)
            if name == "shutdown" and handler:
                self.worker.signals = max(self.worker.signals, 1)  # warm, as SIGTERM

    # -- Celery's commands -------------------------------------------------------------------
    def do_ping(self) -> dict:
        return {"ok": "pong"}

    def do_registered(self, taskinfoitems: Any = None) -> list[str]:
        return sorted(n for n in self.worker.app.tasks if not n.startswith("fastq."))

    def do_active_queues(self) -> list[dict]:
        return [{"name": q, "exchange": {"name": q, "type": "direct"}, "routing_key": q,
                 "durable": True, "auto_delete": False} for q in self.worker.queues]

    def do_active(self, safe: Any = None) -> list[dict]:
        """The task each busy child is running, read back from its message in Redis."""
        out = []
        now_mono, now = time.monotonic(), time.time()
        for slot in range(self.worker.slots.count):
            state = self.worker.slots.read(slot)
            if not state.busy:
                continue
            info: dict[str, Any] = {"id": state.task_id, "hostname": self.worker.name,
                                    "time_start": now - (now_mono - state.started),
                                    "acknowledged": True, "worker_pid": self._pid(slot),
                                    "delivery_info": {"routing_key": parse_stream(
                                        state.stream)[0] if state.stream else None}}
            data = self.broker.entry(state.stream, state.entry) if state.stream else None
            if data:
                msg = decode_message(data)
                args, kwargs = unpack_body(msg.body, msg.codec, msg.compressed, False)
                info.update(name=msg.task, type=msg.task, args=list(args), kwargs=kwargs)
            out.append(info)
        return out

    def do_reserved(self, safe: Any = None) -> list[dict]:
        return []  # a child's prefetched messages are only read as it runs them (see docs)

    def do_scheduled(self, safe: Any = None) -> list[dict]:
        return []  # countdown/eta messages wait in Redis, not in a worker (see docs)

    def do_revoked(self) -> list[str]:
        live, _cursor = self.broker.live_revocations()
        return sorted(live)

    def do_stats(self) -> dict:
        return {"pid": os.getpid(), "hostname": socket.gethostname(),
                "uptime": int(time.time() - self.started),
                "total": health.pool_totals(self.broker, self.worker.consumers()),
                "pool": {"implementation": "fastq:prefork",
                         "max-concurrency": self.worker.concurrency,
                         "processes": sorted(self.worker.children)},
                "broker": {"transport": "redis"}, "prefetch_count": self.worker.app.settings.prefetch}

    def do_conf(self, with_defaults: bool = False) -> dict:
        conf = self.worker.app.conf
        if hasattr(conf, "table"):
            return conf.table(with_defaults=with_defaults)
        return conf.model_dump(mode="json", exclude={"beat_schedule"})

    def do_shutdown(self) -> dict:
        return {"ok": "shutting down"}

    # -- run-time changes (fastq/worker/tuning.py carries them to the children) ---------------
    def do_rate_limit(self, task_name: str, rate_limit: Any = None, **_: Any) -> dict:
        """The rate limit is fastq's global bucket for the task: send it to every worker."""
        try:
            rate = parse_rate(rate_limit)
        except ValueError as exc:
            return {"error": f"Invalid rate limit string: {exc!r}"}
        if task_name not in self.worker.app.tasks:
            return {"error": "unknown task"}
        self._tune().rates[task_name] = rate_limit if rate else None
        self.worker.tuning.publish()
        if not rate:
            return {"ok": "rate limit disabled successfully"}
        return {"ok": "new rate limit set successfully"}

    def do_time_limit(self, task_name: str, hard: float | None = None, soft: float | None = None,
                      **_: Any) -> dict:
        if task_name not in self.worker.app.tasks:
            return {"error": "unknown task"}
        self._tune().limits[task_name] = (_ms(soft), _ms(hard))
        self.worker.tuning.publish()
        return {"ok": "time limits set successfully"}

    def do_pool_grow(self, n: int = 1, **_: Any) -> dict:
        self.worker.resize(self.worker.concurrency + int(n))
        return {"ok": "pool will grow"}

    def do_pool_shrink(self, n: int = 1, **_: Any) -> dict:
        self.worker.resize(self.worker.concurrency - int(n))
        return {"ok": "pool will shrink"}

    def do_autoscale(self, max: int, min: int | None = None, **_: Any) -> dict:  # noqa: A002
        """fastq runs the most children all the time (see the worker's ``--autoscale``)."""
        self.worker.resize(int(max))
        return {"ok": f"autoscale now max={max} min={min}"}

    def do_add_consumer(self, queue: str, **_: Any) -> dict:
        if queue not in self.worker.queues:
            self.worker.consume([*self.worker.queues, queue])
        return {"ok": f"add consumer {queue}"}

    def do_cancel_consumer(self, queue: str, **_: Any) -> dict:
        rest = [q for q in self.worker.queues if q != queue]
        if not rest:
            return {"error": f"{queue} is the last queue this worker reads; it keeps reading it "
                             "(stop the worker instead)"}
        if rest != self.worker.queues:
            self.worker.consume(rest)
        return {"ok": f"no longer consuming from {queue}"}

    def _tune(self) -> Overrides:
        return self.worker.tuning.overrides

    def _pid(self, slot: int) -> int | None:
        return next((pid for pid, s in self.worker.children.items() if s == slot), None)


def _ms(seconds: float | None) -> int:
    """A time limit in seconds (None or 0: none) as the whole ms a message carries."""
    if seconds is None:
        return 0
    if seconds < 0:
        raise ValueError(f"a time limit cannot be negative: {seconds}")
    return int(float(seconds) * 1000)
