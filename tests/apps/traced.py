"""An app traced by fastq.tracing into an in-memory exporter (producer and an in-process worker
share it, so one exporter sees both sides)."""
from __future__ import annotations

import asyncio
import time

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from fastq import App
from fastq.tracing import Tracing

exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
tracer = provider.get_tracer("tests")

tracing = Tracing(tracer_provider=provider)
app = App("traced", middleware=[tracing])


@app.task
def add(x, y):
    return x + y


@app.task
def inc(x):
    return x + 1


@app.task
def boom():
    raise ValueError("boom")


@app.task(retry_for=(KeyError,), max_retries=1, retry_schedule=[0.01])
def flaky():
    raise KeyError("always")


@app.task
def spawn(x):
    """Sends a task from inside a task: its send is a child of this run."""
    with tracer.start_as_current_span("inside spawn"):
        return add.delay(x, 1).id


@app.task
async def async_spawn(x):
    await asyncio.sleep(0.01)
    with trace.use_span(tracing.run_span()), tracer.start_as_current_span("inside async_spawn"):
        pass
    return add.delay(x, 2).id


@app.task
def nap(n):
    time.sleep(0.005)
    return n
