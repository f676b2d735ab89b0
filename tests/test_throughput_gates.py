"""The throughput gates (fastq/throughput.py, fastq/pytest_throughput.py, bench/test_gates.py):
a gate records fastq's share of the raw Redis ceiling, and fails when a baseline's share is not
kept. The gate runs are real pytest runs of bench/test_gates.py in a subprocess."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from fastq import keys
from fastq.broker.ceiling import Ceiling
from fastq.throughput import GateFailed, GateResult, baseline_shares
from tests.conftest import ROOT

SEND_ONE = "bench/test_gates.py::test_send_one"


def _gate_run(*options: str, gate: str = SEND_ONE, env: dict | None = None,
              ) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", gate,
           "--fastq-gate-tasks", "200", "--fastq-gate-rounds", "1", *options]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


def test_a_gate_records_its_share_and_fails_below_the_baseline(tmp_path):
    saved = tmp_path / "run.json"
    first = _gate_run("--benchmark-json", str(saved))
    assert first.returncode == 0, first.stdout + first.stderr
    shares = baseline_shares(saved)
    info = json.loads(saved.read_text())["benchmarks"][0]["extra_info"]
    assert set(shares) == {SEND_ONE} and shares[SEND_ONE] == info["share"] > 0
    assert info["n"] == 200 and info["fastq_per_s"] > 0 and info["ceiling_per_s"] > 0

    # The same run as its own baseline, with a tolerance wide enough for any noise: it passes.
    kept = _gate_run("--fastq-gate-baseline", str(saved), "--fastq-gate-tolerance", "0.9")
    assert kept.returncode == 0, kept.stdout + kept.stderr

    # A baseline whose share no run can reach (ten times what was measured) fails the gate.
    data = json.loads(saved.read_text())
    data["benchmarks"][0]["extra_info"]["share"] = shares[SEND_ONE] * 10
    better = tmp_path / "better.json"
    better.write_text(json.dumps(data))
    dropped = _gate_run("--fastq-gate-baseline", str(better))
    assert dropped.returncode == 1
    assert "GateFailed" in dropped.stdout and "below the baseline's" in dropped.stdout


def test_the_drain_gate_fails_on_a_deliberate_slowdown(tmp_path):
    """A baseline from a normal drain; the same gate with every task slowed by 2 ms fails."""
    gate = "bench/test_gates.py::test_drain_c2"
    saved = tmp_path / "drain.json"
    normal = _gate_run("--benchmark-json", str(saved), gate=gate)
    assert normal.returncode == 0, normal.stdout + normal.stderr
    slowed = _gate_run("--fastq-gate-baseline", str(saved), gate=gate,
                       env={"FASTQ_GATE_SLOWDOWN_MS": "2"})
    assert slowed.returncode == 1, slowed.stdout + slowed.stderr
    assert "GateFailed" in slowed.stdout and "below the baseline's" in slowed.stdout


def test_a_baseline_that_is_not_benchmark_json_is_a_clear_usage_error(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("not json")
    run = _gate_run("--fastq-gate-baseline", str(bad))
    assert run.returncode == 4  # pytest's usage error: nothing ran
    assert "is not a pytest-benchmark JSON file" in run.stderr
    missing = _gate_run("--fastq-gate-baseline", str(tmp_path / "nope.json"))
    assert missing.returncode == 4 and "no file" in missing.stderr


def test_share_check_uses_the_tolerance():
    result = GateResult("g", 1000, seconds=2.0, ceiling_seconds=1.0)  # share 0.5
    assert result.rate == 500 and result.ceiling_rate == 1000 and result.share == 0.5
    result.check(None, 0.3)  # no baseline: measure only
    result.check(0.7, 0.3)  # floor 0.49
    with pytest.raises(GateFailed, match="below the baseline's 60.0% less 10%"):
        result.check(0.6, 0.1)


def test_ceiling_runs_every_path_and_leaves_no_keys(r, redis_server):
    ceiling = Ceiling(redis_server.url)
    try:
        for measure in (ceiling.send_one, ceiling.send_batch, ceiling.drain, ceiling.round_trip):
            assert measure(150, rounds=2) > 0
    finally:
        ceiling.close()
    assert not r.exists(keys.CEILING, keys.CEILING_REPLY)


def test_ceiling_refuses_a_broker_that_is_not_redis():
    with pytest.raises(ValueError, match="needs a real Redis server, not memory://"):
        Ceiling("memory://x")
