"""Moving messages queued by real Celery into fastq (fastq migrate-celery, fastq/migrate.py):
nothing lost, the same task ids, and a real fastq worker runs them."""
from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from fastq import keys
from fastq.result import AsyncResult
from tests.conftest import ROOT, app_fixture

celery = pytest.importorskip("celery")

app = app_fixture("tests.apps.basic")
ADD = "tests.apps.basic.add"


@pytest.fixture
def producer(redis_server, r):
    """A real Celery app on the same Redis, as the old producers were."""
    capp = celery.Celery("old", broker=redis_server.url)
    capp.conf.broker_transport_options = {"priority_steps": list(range(10)),
                                          "queue_order_strategy": "priority"}
    yield capp
    capp.close()


def _migrate(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fastq", "-A", "tests.apps.basic",
                           "migrate-celery", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)


def test_queued_celery_messages_move_over_and_run_under_their_ids(app, producer, start_worker,
                                                                   r):
    plain = producer.send_task(ADD, (1, 2))
    urgent = producer.send_task(ADD, (10, 20), priority=9, queue="other")
    later = producer.send_task(ADD, (2, 2), countdown=1)
    chained = (producer.signature(ADD, (1, 1)) | producer.signature(ADD, (5,))).apply_async()
    pickled = producer.send_task(ADD, (0, 0), serializer="pickle")
    # a message a Celery worker had reserved (an ETA'd one), as kombu keeps it unacked
    held = producer.send_task(ADD, (7, 7), countdown=1)
    raw = next(m for m in r.lrange("celery", 0, -1) if held.id.encode() in m)
    r.lrem("celery", 1, raw)
    r.hset(keys.KOMBU_UNACKED, "tag-1", json.dumps([json.loads(raw), "", "celery"]))
    r.zadd(keys.KOMBU_UNACKED_INDEX, {"tag-1": time.time()})

    dry = _migrate("-Q", "celery,other", "--dry-run", "--include-unacked")
    assert dry.returncode == 1 and "would move 5 message(s)" in dry.stdout, dry.stdout + dry.stderr
    assert r.llen("celery") == 4  # nothing changed

    run = _migrate("-Q", "celery,other", "--include-unacked", "--to-queue", "default")
    assert run.returncode == 1, run.stdout + run.stderr  # one message was not movable ...
    assert "moved 5 message(s)" in run.stdout and "pickle" in run.stderr
    assert r.llen("celery") == 0 and r.llen(f"other{keys.KOMBU_PRIORITY_SEP}9") == 0
    assert r.hlen(keys.KOMBU_UNACKED) == 0 and r.llen(keys.celery_migrating()) == 0
    [kept] = r.lrange(keys.celery_unmigrated("celery"), 0, -1)  # ... and is kept, not lost
    assert pickled.id.encode() in kept
    assert r.xlen(keys.stream("default", 4)) == 1  # Celery's priority 9: the lowest level

    start_worker()
    get = lambda res: AsyncResult(res.id, app).get(timeout=20)  # noqa: E731
    assert [get(plain), get(urgent), get(later), get(held)] == [3, 30, 4, 14]
    assert get(chained) == 7 and get(chained.parent) == 2  # the rest of the chain came along
