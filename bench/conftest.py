"""The throughput gates' Redis: a private server for the session, started when a gate first asks
(bench/test_core_bench.py needs none). The ``fastq_gate`` fixture comes from the plugin."""
from __future__ import annotations

import pytest

from fastq.testing import RedisServer

pytest_plugins = ["fastq.pytest_throughput"]  # also an entry point once fastq is installed


@pytest.fixture(scope="session")
def gate_redis() -> RedisServer:
    server = RedisServer().start()
    yield server
    server.cleanup()


@pytest.fixture
def gate_app(gate_redis):
    """bench_gate_app's app on the private server, emptied first."""
    from bench_gate_app import app

    app.close()
    app.settings.broker_url = gate_redis.url
    app.broker.client.flushall()
    yield app
    app.close()
