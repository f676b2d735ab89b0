"""Workflows: Celery's canvas (chain, group, chord, chunks) and ``app.dag()``, run as one graph in
Redis that workers advance in the round trip after each acknowledgement. See docs/workflows.md."""
from fastq.workflows.canvas import (
           Signature,
           chain,
           chord,
           chunks,
           group,
           maybe_signature,
           signature,
)
from fastq.workflows.dag import Dag
from fastq.workflows.results import DagResult, GroupResult

__all__ = ["Dag", "DagResult", "GroupResult", "Signature", "chain", "chord", "chunks", "group",
           "maybe_signature", "signature"]
