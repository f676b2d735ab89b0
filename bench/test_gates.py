"""Throughput gates of fastq's hot paths: each measures fastq and the raw Redis ceiling in one run
and fails when fastq's share of the ceiling drops more than ``--fastq-gate-tolerance`` below the
baseline's (docs/testing.md, "Gating throughput"; bench/README.md for the commands)."""
from __future__ import annotations

import bench_gate_app as tasks

from fastq import chord

MODULE = "bench_gate_app"


def test_send_one(fastq_gate, gate_app):
    fastq_gate(gate_app).send_one(tasks.noop, n=2000)


def test_send_batch(fastq_gate, gate_app):
    fastq_gate(gate_app).send_batch(tasks.noop, n=20_000)


def test_drain_c2(fastq_gate, gate_app):
    fastq_gate(gate_app, MODULE).drain(tasks.noop, n=20_000, concurrency=2)


def test_round_trip(fastq_gate, gate_app):
    fastq_gate(gate_app, MODULE).round_trip(tasks.echo, n=500)


def test_chord(fastq_gate, gate_app):
    def run(n: int) -> None:
        assert chord([tasks.echo.s(i) for i in range(n)], tasks.count.s()).delay().get(
            timeout=60) == n

    fastq_gate(gate_app, MODULE).measure(run, n=2000, ceiling="drain", concurrency=2)
