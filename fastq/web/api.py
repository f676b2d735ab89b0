"""The REST API and the dashboard of a fastq App, as a FastAPI app (docs/web.md).

Endpoints are plain ``def`` functions: FastAPI runs them in its thread pool, so the broker's
blocking client never stalls the event loop; the live stream only reads the sampler's snapshot.
"""
from __future__ import annotations

import asyncio
import inspect
import math
import os
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from importlib.resources import files
from typing import Annotated, Any

import orjson
from fastapi import Depends, FastAPI, HTTPException, Query, Request, status
from fastapi.encoders import jsonable_encoder
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from pydantic import BaseModel, ConfigDict, Field, field_validator

from fastq import states
from fastq.app import App
from fastq.beat import load_entries
from fastq.dlq import DeadLetters
from fastq.errors import BrokerUnavailable, EncodeError, FastqError, NotRegistered
from fastq.metrics.collector import QueueCollector
from fastq.task import resolve_priority
from fastq.web.auth import read_guard, write_guard
from fastq.web.body_limit import BodyLimit
from fastq.web.recent import RecentTasks
from fastq.web.sampler import Sampler, dead_letter_view
from fastq.worker.health import live_workers, problems

STATIC = files("fastq.web") / "static"
MAX_COUNTDOWN_S = 365 * 86400.0
QueueName = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[^\s{}]+$")]


# -- request bodies -------------------------------------------------------------------------
class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TaskIn(Strict):
    """A task to send: ``name`` must be registered in the server's app."""

    name: str = Field(min_length=1, max_length=500)
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    queue: QueueName | None = None
    priority: int | str | None = Field(None, description="0 (critical) .. 4 (batch) or a name")
    countdown: float | None = Field(None, ge=0, le=MAX_COUNTDOWN_S, allow_inf_nan=False,
                                    description="seconds from now")

    @field_validator("priority", mode="before")
    @classmethod
    def _priority(cls, v: Any) -> int | None:
        return None if v is None else resolve_priority(v)


class PriorityIn(Strict):
    priority: int | str
    queue: QueueName | None = None

    @field_validator("priority", mode="before")
    @classmethod
    def _priority(cls, v: Any) -> int:
        return resolve_priority(v)


class RevokeIn(Strict):
    terminate: bool = False


class DeadSelection(Strict):
    """Exactly one of: ``ids`` (dead-letter entry ids or task ids), ``task`` (a name), ``all``."""

    ids: list[str] = []
    task: str | None = None
    all: bool = False
    queue: QueueName | None = None


# -- helpers --------------------------------------------------------------------------------
def _unprocessable(message: str) -> HTTPException:
    return HTTPException(422, message)


def _check_arguments(task: Any, args: list, kwargs: dict) -> None:
    """Arguments that cannot bind to the task function are refused here, not by a worker."""
    try:
        sig = inspect.signature(task.fn)
    except (TypeError, ValueError):
        return
    if task.bind:
        params = list(sig.parameters.values())[1:]
        sig = sig.replace(parameters=params)
    try:
        sig.bind(*args, **kwargs)
    except TypeError as exc:
        raise _unprocessable(f"arguments do not fit {task.name}: {exc}") from None


def _jsonable(value: Any) -> Any:
    if isinstance(value, BaseException):
        return f"{type(value).__name__}: {value}"
    try:
        return jsonable_encoder(value)
    except (TypeError, ValueError):
        return repr(value)


def _select(body: DeadSelection) -> dict[str, Any]:
    if sum((bool(body.ids), body.task is not None, body.all)) != 1:
        raise _unprocessable("give exactly one of: ids (entry or task ids), task (a name), all")
    return {"ids": body.ids, "task": body.task, "all": body.all, "queue": body.queue}


# -- the app --------------------------------------------------------------------------------
def create_app(fq: App, *, sample_interval: float = 1.0,
               stopping: Callable[[], bool] = lambda: False) -> FastAPI:
    """The web API and dashboard of ``fq`` (settings ``web_*`` are read from ``fq.conf``);
    live streams end once ``stopping()`` is true (the server is shutting down)."""
    conf = fq.conf
    recent = RecentTasks()
    sampler = Sampler(fq, recent, sample_interval)
    queue_metrics = CollectorRegistry(auto_describe=False)
    queue_metrics.register(QueueCollector(fq.broker.with_timeout(2.0),
                                          f"web@{socket.gethostname()}:{os.getpid()}"))

    @asynccontextmanager
    async def lifespan(_api: FastAPI) -> AsyncIterator[None]:
        sampler.start()
        yield
        sampler.stop()

    api = FastAPI(title="fastq", version="1", lifespan=lifespan,
                  description="Tasks, queues, workers, dead letters, beat and workflows of a "
                              "fastq app (docs/web.md).")
    api.add_middleware(BodyLimit, max_body=conf.web_max_body)
    reads = [Depends(read_guard(conf))]
    writes = [Depends(write_guard(conf))]

    @api.exception_handler(BrokerUnavailable)
    async def _broker_down(_request: Request, exc: BrokerUnavailable) -> JSONResponse:
        return JSONResponse({"detail": f"broker unavailable: {exc}"}, status_code=503)

    # -- tasks ----------------------------------------------------------------------------
    @api.post("/api/tasks", status_code=201, dependencies=writes, tags=["tasks"])
    def send_task(body: TaskIn) -> dict[str, str]:
        """Send a registered task; returns its id. Nothing is sent on any error."""
        try:
            task = fq.get_task(body.name)
        except NotRegistered:
            raise _unprocessable(f"unknown task {body.name!r}: not registered in this app "
                                 f"({len(fq.tasks)} tasks are)") from None
        _check_arguments(task, body.args, body.kwargs)
        try:
            res = task.apply_async(body.args, body.kwargs, queue=body.queue,
                                   priority=body.priority, countdown=body.countdown)
        except (TypeError, ValueError, EncodeError) as exc:
            raise _unprocessable(str(exc)) from None
        recent.add(res.id, task.name, body.queue or task.queue or conf.default_queue)
        return {"id": res.id}

    @api.get("/api/tasks/{task_id}", dependencies=reads, tags=["tasks"])
    def task_state(task_id: str) -> dict[str, Any]:
        """State, result and traceback (PENDING for an unknown or waiting task)."""
        res = fq.AsyncResult(task_id)
        state = res.state
        ready = state in states.READY_STATES or state == states.RETRY
        return {"id": task_id, "state": state, "name": res.name,
                "result": _jsonable(res.result) if ready else None,
                "traceback": res.traceback if state in states.EXCEPTION_STATES else None,
                "date_done": res.date_done}

    @api.post("/api/tasks/{task_id}/revoke", dependencies=writes, tags=["tasks"])
    def revoke(task_id: str, body: RevokeIn | None = None) -> dict[str, Any]:
        """A waiting task never runs; with ``terminate`` a running one is stopped."""
        fq.control.revoke(task_id, terminate=bool(body and body.terminate))
        return {"id": task_id, "revoked": True}

    @api.put("/api/tasks/{task_id}/priority", dependencies=writes, tags=["tasks"])
    def set_priority(task_id: str, body: PriorityIn) -> dict[str, Any]:
        """Move a task still waiting in its queue (default: the app's) to another level."""
        if not fq.control.set_priority(task_id, body.priority, body.queue):
            raise HTTPException(status.HTTP_409_CONFLICT, f"task {task_id} is not waiting in "
                                f"queue {body.queue or conf.default_queue} (running, done, "
                                "delayed or unknown)")
        return {"id": task_id, "priority": body.priority}

    # -- queues, workers, workflows ---------------------------------------------------------
    @api.get("/api/queues", dependencies=reads, tags=["queues"])
    def queues() -> list[dict[str, Any]]:
        """Per queue and priority: depth, pending, oldest age and rates (as of the last sample,
        at most about a second old)."""
        return sampler.latest["queues"]

    @api.get("/api/workers", dependencies=reads, tags=["workers"])
    def workers() -> dict[str, Any]:
        """Live supervisors with their children (busy with which task), and their problems."""
        records, orphans = live_workers(fq.broker)
        for rec in records:
            rec["problems"] = problems(rec)
        return {"workers": records, "other_consumers": orphans}

    @api.get("/api/workflows", dependencies=reads, tags=["workflows"])
    def workflows(limit: int = Query(1000, ge=1, le=100_000)) -> dict[str, Any]:
        """Ids of the workflow graphs that have not finished."""
        return {"running": fq.broker.running_graphs(limit)}

    # -- dead letters -----------------------------------------------------------------------
    @api.get("/api/dlq", dependencies=reads, tags=["dead letters"])
    def dead_letters(queue: QueueName | None = None, task: str | None = None,
                     limit: int = Query(100, ge=1, le=10_000)) -> dict[str, Any]:
        """Dead letters, oldest first per queue, with their errors and tracebacks."""
        dead = DeadLetters(fq)
        return {"total": dead.count(queue),
                "dead_letters": [dead_letter_view(dl) for dl in dead.list(queue, task, limit)]}

    @api.get("/api/dlq/{ident}", dependencies=reads, tags=["dead letters"])
    def dead_letter(ident: str, queue: QueueName | None = None) -> list[dict[str, Any]]:
        """The dead letters with this entry id or task id."""
        found = DeadLetters(fq).find(ident, queue)
        if not found:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no dead letter {ident!r}")
        return [dead_letter_view(dl) for dl in found]

    @api.post("/api/dlq/requeue", dependencies=writes, tags=["dead letters"])
    def requeue(body: DeadSelection) -> dict[str, Any]:
        """Send dead letters again, unchanged (same task id, arguments and priority)."""
        try:
            report = DeadLetters(fq).requeue_report(**_select(body))
        except ValueError as exc:
            raise _unprocessable(str(exc)) from None
        return {"requeued": [{"entry": dl.dlq_entry_id, "queue": dl.queue, "task_id": dl.task_id,
                              "new_entry": new} for dl, new in report.requeued],
                "refused": [{"entry": dl.dlq_entry_id, "queue": dl.queue, "why": why}
                            for dl, why in report.refused],
                "missing": report.missing}

    @api.post("/api/dlq/purge", dependencies=writes, tags=["dead letters"])
    def purge_dead(body: DeadSelection) -> dict[str, int]:
        """Delete dead letters for good."""
        try:
            return {"purged": DeadLetters(fq).purge(**_select(body))}
        except ValueError as exc:
            raise _unprocessable(str(exc)) from None

    # -- beat -------------------------------------------------------------------------------
    def entries() -> dict[str, Any]:
        try:
            return load_entries(fq)
        except (TypeError, ValueError) as exc:
            raise HTTPException(status.HTTP_409_CONFLICT, f"beat_schedule is invalid: {exc}") from None

    @api.get("/api/beat", dependencies=reads, tags=["beat"])
    def beat_entries() -> list[dict[str, Any]]:
        """The periodic tasks, with the instant each last fired (epoch ms, None: never)."""
        last = fq.broker.beat_last_fired()
        return [{"name": e.name, "task": e.task, "schedule": str(e.schedule),
                 "args": _jsonable(e.args), "kwargs": _jsonable(e.kwargs),
                 "last_fired_ms": last.get(e.name)} for e in entries().values()]

    @api.post("/api/beat/{name}/trigger", status_code=201, dependencies=writes, tags=["beat"])
    def trigger(name: str) -> dict[str, str]:
        """Send an entry's task now, with its arguments and options (its schedule is unchanged)."""
        entry = entries().get(name)
        if entry is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no beat entry {name!r}")
        try:
            res = fq.send_task(entry.task, entry.args, entry.kwargs, **entry.options)
        except (FastqError, TypeError, ValueError) as exc:
            raise _unprocessable(f"beat entry {name!r}: {exc}") from None
        recent.add(res.id, entry.task, entry.options.get("queue") or conf.default_queue)
        return {"id": res.id}

    # -- operations -------------------------------------------------------------------------
    @api.get("/health", tags=["operations"])
    def health() -> JSONResponse:
        """200 when the broker answers (with the number of live workers), else 503."""
        try:
            records, _ = live_workers(fq.broker)
        except BrokerUnavailable as exc:
            return JSONResponse({"status": "unavailable", "detail": str(exc)}, status_code=503)
        return JSONResponse({"status": "ok", "workers": len(records)})

    @api.get("/metrics", dependencies=reads, tags=["operations"])
    def metrics() -> Response:
        """Prometheus text format: this process's own figures, and the queue-wide ones (depths,
        delayed, dead letters, workflows; docs/metrics.md) while it holds the metrics role."""
        return Response(generate_latest(REGISTRY) + generate_latest(queue_metrics),
                        media_type=CONTENT_TYPE_LATEST)

    # -- live snapshot and page --------------------------------------------------------------
    @api.get("/api/snapshot", dependencies=reads, tags=["live"])
    def snapshot() -> Response:
        """What the dashboard shows, as of the last sample."""
        return Response(_dumps(sampler.latest), media_type="application/json")

    @api.get("/api/stream", dependencies=reads, tags=["live"],
             response_class=StreamingResponse)
    async def stream(request: Request) -> StreamingResponse:
        """Server-sent events: the snapshot (``data: {json}``) after each sample."""

        async def events() -> AsyncIterator[bytes]:
            seen = -1
            while not stopping() and not await request.is_disconnected():
                if sampler.seq != seen:
                    seen = sampler.seq
                    yield b"data: " + _dumps(sampler.latest) + b"\n\n"
                await asyncio.sleep(min(sampler.interval / 4, 0.25))

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @api.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(str(STATIC / "index.html"))

    api.mount("/static", StaticFiles(directory=str(STATIC)), name="static")
    api.state.sampler = sampler
    api.state.recent = recent
    return api


def _dumps(value: Any) -> bytes:
    return orjson.dumps(value, default=_fallback, option=orjson.OPT_NON_STR_KEYS)


def _fallback(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return repr(value)

