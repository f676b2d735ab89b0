"""OpenTelemetry tracing as middleware (``pip install 'fastq[otel]'``, docs/tracing.md).

``app.add_middleware(Tracing())``: every send makes a PRODUCER span ``send <task>`` and carries
its context in the message's headers (W3C ``traceparent``, through the global propagator); the
worker continues it with one CONSUMER span ``run <task>`` per run (queue, attempt, outcome). The
spans go to the user's tracer provider (the global one unless one is given); fastq only creates
them, and does no I/O of its own: exporting is the provider's span processor's business.

Workflow nodes are enveloped (and so pass ``before_send``) when the workflow is submitted, so
each node carries the submitter's context; with no span active at submission, one short
``send workflow`` span (``send group`` for a plain group) is made the parent of all of a graph's
nodes, so they share one trace.
"""
from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

try:
    from opentelemetry import context, propagate, trace
    from opentelemetry.trace import SpanKind, Status, StatusCode
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError("fastq.tracing needs OpenTelemetry: pip install 'fastq[otel]'") from exc

from fastq import __version__
from fastq.errors import Ignore, Reject
from fastq.middleware import Middleware, SkipMessage
from fastq.task import current_request

if TYPE_CHECKING:
    from fastq.message import Message

SYSTEM = "fastq"
# attribute names: OpenTelemetry's messaging conventions, then fastq's own
DESTINATION = "messaging.destination.name"
MESSAGE_ID = "messaging.message.id"
OPERATION = "messaging.operation.type"
TASK = "fastq.task.name"
ATTEMPT = "fastq.task.attempt"
OUTCOME = "fastq.task.outcome"
WORKFLOW = "fastq.workflow.id"
GROUP = "fastq.group.id"


class _Run:
    """A task's open span in this worker, and what the hooks learnt about its outcome."""

    __slots__ = ("span", "token", "outcome", "open")

    def __init__(self, span: trace.Span, token: object | None):
        self.span = span
        self.token = token  # the attached context (sync tasks), detached when the span ends
        self.outcome: str | None = None
        self.open = True


class _Local(threading.local):
    """This thread's runs: each worker child (a process, or a thread of ``fastq.testing``) runs
    its tasks and their hooks in one thread, and a sync run's context is attached to it."""

    def __init__(self) -> None:
        self.runs: dict[str, _Run] = {}  # task id -> its open run
        self.dead: list[_Run] = []  # dead-lettered runs whose after_execute may not follow
        self.batch: tuple[str, context.Context] | None = None  # the last workflow/group sent


class Tracing(Middleware):
    """OpenTelemetry spans for sends and runs; see docs/tracing.md.

    ``tracer_provider``: where spans go (default: the global provider, looked up when a span is
    first made). ``setup``: called in each worker child as it starts (``child_init``), for a
    provider that must be built after the fork (an OTLP/gRPC exporter, whose channel does not
    survive one). As a child stops warm, the provider is flushed (``force_flush``): a child
    leaves with ``os._exit``, which runs no ``atexit`` flush of a batching span processor.
    """

    def __init__(self, tracer_provider: trace.TracerProvider | None = None,
                 setup: Callable[[], Any] | None = None):
        self._provider = tracer_provider
        self._setup = setup
        self._tracer: trace.Tracer | None = None
        self._local = _Local()

    @property
    def tracer(self) -> trace.Tracer:
        if self._tracer is None:
            self._tracer = trace.get_tracer("fastq", __version__,
                                            tracer_provider=self._provider)
        return self._tracer

    # -- producer -----------------------------------------------------------------------------
    def before_send(self, app: Any, message: Message) -> None:
        parent = self._send_parent(message)
        attributes = {"messaging.system": SYSTEM, OPERATION: "send", DESTINATION: message.queue,
                      MESSAGE_ID: message.id, TASK: message.task}
        if message.dag_id:
            attributes[WORKFLOW] = message.dag_id
        if message.group_id:
            attributes[GROUP] = message.group_id
        span = self.tracer.start_span(f"send {message.task}", parent, SpanKind.PRODUCER,
                                      attributes)
        # The span marks the send; it does not time the write (batched, or a graph's later).
        propagate.inject(message.options, trace.set_span_in_context(span, parent))
        span.end()

    def _send_parent(self, message: Message) -> context.Context | None:
        """The active span's context; else the running task's span (an ``async def`` task,
        whose span is not the active one); else, for a workflow node or group member, the
        context its whole batch shares; else None (a new trace)."""
        if trace.get_current_span().get_span_context().is_valid:
            return None  # start_span takes the current context
        span = self.run_span()
        if span is not trace.INVALID_SPAN:
            return trace.set_span_in_context(span)
        batch_id = message.dag_id or message.group_id
        if batch_id:
            return self._batch_context(batch_id, "workflow" if message.dag_id else "group")
        return None

    def _batch_context(self, batch_id: str, kind: str) -> context.Context:
        """One short ``send workflow`` (or ``send group``) span per submission, made when its
        first node is enveloped: a graph's nodes are enveloped one after another in one call."""
        last = self._local.batch
        if last is not None and last[0] == batch_id:
            return last[1]
        span = self.tracer.start_span(f"send {kind}", None, SpanKind.PRODUCER, {
            "messaging.system": SYSTEM, OPERATION: "send",
            WORKFLOW if kind == "workflow" else GROUP: batch_id})
        span.end()
        ctx = trace.set_span_in_context(span)
        self._local.batch = (batch_id, ctx)
        return ctx

    def run_span(self) -> trace.Span:
        """The span of the task running here (``trace.INVALID_SPAN`` outside a task). In an
        ``async def`` task, whose span is not the active one, ``with trace.use_span(
        tracing.run_span()):`` makes the spans it starts its children."""
        running = current_request.get()
        run = self._local.runs.get(running.id) if running is not None else None
        return run.span if run is not None else trace.INVALID_SPAN

    # -- worker -------------------------------------------------------------------------------
    def child_init(self, child: Any) -> None:
        if self._setup is not None:
            self._setup()

    def child_shutdown(self, child: Any) -> None:
        self._end_dead()
        flush = getattr(self._provider or trace.get_tracer_provider(), "force_flush", None)
        if flush is not None:
            flush()

    def before_execute(self, task: Any, message: Message) -> None:
        local = self._local
        if local.dead:
            self._end_dead()
        if not task.is_async and local.runs:
            self._end_stale()
        span = self._start_run(task, message)
        # A sync task runs here, in this context: its span is the active one while it runs (its
        # own spans and sends are its children). An async task runs later on the event loop.
        token = None if task.is_async else context.attach(trace.set_span_in_context(span))
        local.runs[message.id] = _Run(span, token)

    def _start_run(self, task: Any, message: Message) -> trace.Span:
        parent = propagate.extract(message.options) if message.options else context.Context()
        attributes = {"messaging.system": SYSTEM, OPERATION: "process",
                      DESTINATION: message.queue, MESSAGE_ID: message.id, TASK: task.name,
                      ATTEMPT: message.attempt}
        if message.dag_id:
            attributes[WORKFLOW] = message.dag_id
        if message.group_id:
            attributes[GROUP] = message.group_id
        return self.tracer.start_span(f"run {task.name}", parent, SpanKind.CONSUMER, attributes)

    def on_retry(self, task: Any, message: Message, exc: BaseException,
                 countdown: float) -> None:
        run = self._local.runs.get(message.id)
        if run is not None:
            run.outcome = "retry"
            run.span.set_attribute("fastq.task.retry_countdown", countdown)

    def on_dead_letter(self, message: Message | None, reason: str) -> None:
        run = self._local.runs.get(message.id) if message is not None else None
        if run is not None:
            run.span.set_attribute("fastq.task.dead_letter_reason", reason)
            run.outcome = run.outcome or "dead_letter"
            self._local.dead.append(run)

    def after_execute(self, task: Any, message: Message, result: Any = None,
                      exc: BaseException | None = None) -> None:
        run = self._local.runs.pop(message.id, None)
        if run is None:
            if not isinstance(exc, SkipMessage):
                return
            # skipped by a step before this middleware's (revoked, expired): a span all the same
            run = _Run(self._start_run(task, message), None)
        if exc is None:
            outcome = "success"
        elif isinstance(exc, SkipMessage):
            outcome = "skipped"
            run.span.set_attribute("fastq.task.skip_reason", exc.reason)
        elif isinstance(exc, Ignore):
            outcome = "ignored"
        elif isinstance(exc, Reject):
            outcome = "rejected"
        else:
            outcome = "retry" if run.outcome == "retry" else "failure"
            run.span.record_exception(exc)
            if outcome == "failure":
                run.span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
        run.outcome = outcome
        self._end(run)

    def _end(self, run: _Run) -> None:
        run.span.set_attribute(OUTCOME, run.outcome or "not_run")
        run.span.end()
        run.open = False
        if run.token is not None:
            context.detach(run.token)

    def _end_stale(self) -> None:
        """A sync run still open when the next sync task starts never reached after_execute
        (a later middleware deferred it): end it, and give back its context."""
        runs = self._local.runs
        for task_id, run in list(runs.items()):
            if run.token is not None:
                del runs[task_id]
                self._end(run)

    def _end_dead(self) -> None:
        """Dead-lettered runs with no after_execute (their body did not decode) end here."""
        local = self._local
        dead, local.dead = local.dead, []
        for run in dead:
            if run.open:
                local.runs = {k: v for k, v in local.runs.items() if v is not run}
                self._end(run)


__all__ = ["Tracing"]
