"""The embedded default: a private redis-server when no broker is configured or running."""
from __future__ import annotations

import os

import pytest
import redis

from fastq.broker import embedded
from fastq.errors import BrokerUnavailable


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


def test_nothing_configured_and_nothing_listening_starts_a_private_server(monkeypatch):
    monkeypatch.delenv("FASTQ_BROKER_URL", raising=False)
    monkeypatch.setattr(embedded, "DEFAULT_PORT", _unused_port())
    try:
        url = embedded.resolve_broker_url(None)
        assert url != embedded.default_url() and redis.Redis.from_url(url).ping()
        assert os.environ["FASTQ_BROKER_URL"] == url  # exported for forked workers
    finally:
        embedded.stop_private_redis()


def test_no_redis_server_on_path_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("FASTQ_BROKER_URL", raising=False)
    monkeypatch.setattr(embedded, "DEFAULT_PORT", _unused_port())
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(BrokerUnavailable, match="no redis-server on PATH"):
        embedded.resolve_broker_url(None)


def _unused_port() -> int:
    return embedded._free_port()
