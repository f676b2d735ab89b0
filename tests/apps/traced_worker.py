"""An app for a real forked worker, traced the way docs/tracing.md says to for an exporter that
must be built after the fork: ``Tracing(setup=...)`` adds a batching span processor in each
child. Its exporter appends a JSON line per span to $FASTQ_SPAN_LOG."""
from __future__ import annotations

import json
import os
from collections.abc import Sequence

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from fastq import App
from fastq.tracing import Tracing


class JsonLinesExporter(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        lines = "".join(json.dumps({
            "name": s.name, "pid": os.getpid(), "trace_id": s.context.trace_id,
            "parent": s.parent.span_id if s.parent else None,
            "outcome": s.attributes.get("fastq.task.outcome")}) + "\n" for s in spans)
        with open(os.environ["FASTQ_SPAN_LOG"], "a") as f:  # one write: processes do not mix
            f.write(lines)
        return SpanExportResult.SUCCESS


provider = TracerProvider()


def per_child() -> None:
    """In each child: a batch processor that, left alone, would export only every 10 minutes:
    what the test sees was flushed as the child stopped."""
    if os.environ.get("FASTQ_SPAN_LOG"):
        provider.add_span_processor(BatchSpanProcessor(JsonLinesExporter(),
                                                       schedule_delay_millis=600_000))


app = App("traced_worker", middleware=[Tracing(tracer_provider=provider, setup=per_child)])


@app.task
def add(x, y):
    return x + y
