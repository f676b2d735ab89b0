"""Global rate limiting primitives: parse_rate and the Redis token bucket (fastq/ratelimit.py)."""
from __future__ import annotations

import multiprocessing
import time

import pytest
from redis.crc import key_slot

from fastq import keys
from fastq.broker.redis import RedisBroker
from fastq.ratelimit import RateLimiter, capacity, parse_rate


@pytest.fixture
def limiter(r, redis_server):
    """A RateLimiter on a Redis broker over the session's (flushed) server."""
    broker = RedisBroker(redis_server.url)
    yield RateLimiter(broker)
    broker.close()


@pytest.mark.parametrize("rate, expected", [
    ("100/s", 100.0),
    ("10/m", 10 / 60),
    ("5/h", 5 / 3600),
    ("2.5/s", 2.5),
    ("30/min", 0.5),
    (" 7 / sec ", 7.0),
    ("120/M", 2.0),
    ("100", 100.0),
    ("7.5", 7.5),
    (7.5, 7.5),
    (3, 3.0),
    (None, None),
    (0, None),  # Celery: 0 means no limit
    ("0/s", None),
])
def test_parse_rate(rate, expected):
    got = parse_rate(rate)
    if expected is None:
        assert got is None
    else:
        assert got == pytest.approx(expected)


@pytest.mark.parametrize("rate", ["", "abc", "10/d", "10/", "/s", "-1/s", "1/s/s", "ten/m", "nan",
                                  -3, float("inf"), float("nan"), True, [10], b"10/s"])
def test_parse_rate_rejects_bad_input_clearly(rate):
    with pytest.raises(ValueError, match="invalid rate limit"):
        parse_rate(rate)


def test_key_builders():
    # A queue's bucket shares the queue's cluster slot (its hash tag), so one script may use both.
    assert key_slot(keys.rate_queue("emails").encode()) == key_slot(keys.stream("emails", 2).encode())
    assert key_slot(keys.rate_queue("emails").encode()) != key_slot(keys.stream("other", 2).encode())
    assert keys.rate_task("proj.tasks.send") != keys.rate_task("proj.tasks.sent")
    assert keys.rate_task("emails") not in {keys.rate_queue("emails"), keys.stream("emails", 2)}


def test_capacity_is_burst_seconds_but_at_least_one():
    assert capacity(1000) == pytest.approx(100)
    assert capacity(5) == 1
    assert capacity(100, burst_s=0.5) == 50


def test_wait_ms_is_time_to_the_next_token(limiter):
    key = keys.rate_task("t.wait")
    # 10/s: capacity 1, one token every 100 ms
    assert limiter.acquire(key, 10, now_ms=1_000) == (1, 100)
    assert limiter.acquire(key, 10, now_ms=1_000) == (0, 100)
    assert limiter.acquire(key, 10, now_ms=1_050) == (0, 50)
    assert limiter.acquire(key, 10, now_ms=1_099) == (0, 1)
    assert limiter.acquire(key, 10, now_ms=1_100) == (1, 100)
    assert limiter.acquire(key, 10, now_ms=5_000) == (1, 100)  # idle: refills to capacity, no more
    assert limiter.acquire(key, 10, now_ms=4_000) == (0, 100)  # a clock behind refills nothing


def test_partial_grants_and_burst(limiter, r):
    key = keys.rate_queue("bursty")
    # 100/s with a 0.5 s burst: 50 tokens at first, then one per 10 ms
    assert limiter.acquire(key, 100, n=80, now_ms=0, burst_s=0.5) == (50, 10)
    assert limiter.acquire(key, 100, n=5, now_ms=5, burst_s=0.5) == (0, 5)
    assert limiter.acquire(key, 100, n=2, now_ms=30, burst_s=0.5) == (2, 0)  # 3 refilled, 1 left
    assert limiter.acquire(key, 100, n=1, now_ms=30, burst_s=0.5) == (1, 10)
    # a slow rate: 30/m is one token per 2 s
    slow = keys.rate_task("t.slow")
    assert limiter.acquire(slow, parse_rate("30/m"), now_ms=0) == (1, 2000)
    assert limiter.acquire(slow, parse_rate("30/m"), now_ms=500) == (0, 1500)


def test_idle_buckets_expire(limiter, r):
    key = keys.rate_task("t.expire")
    limiter.acquire(key, 10)  # capacity 1: full again after 100 ms, so gone 100 ms + 1 s later
    ttl = r.pttl(key)
    assert 0 < ttl <= 1100
    assert set(r.hgetall(key)) == {b"tokens", b"ts"}


def test_no_limit_does_not_touch_redis(limiter, r):
    assert limiter.acquire(keys.rate_task("t.free"), None, n=7) == (7, 0)
    assert r.exists(keys.rate_task("t.free")) == 0


def test_bad_arguments(limiter, r):
    with pytest.raises(ValueError):
        limiter.acquire("k", 0)
    with pytest.raises(ValueError):
        limiter.acquire("k", -1)
    with pytest.raises(ValueError):
        limiter.acquire("k", 10, n=0)
    with pytest.raises(ValueError):
        RateLimiter(limiter.broker, burst_s=-1)


def _run_for(limiter: RateLimiter, key: str, rate: float, start: float, end: float,
             sleep: bool) -> int:
    while time.time() < start:
        time.sleep(0.001)
    got = 0
    while time.time() < end:
        granted, wait_ms = limiter.acquire(key, rate)
        got += granted
        if not granted and sleep:
            time.sleep(min(wait_ms / 1000, max(end - time.time(), 0)))
    return got


def test_one_client_gets_the_rate_by_the_server_clock(limiter):
    rate = 50.0
    start = time.time()
    got = _run_for(limiter, keys.rate_task("t.single"), rate, start, start + 2.0, sleep=True)
    expected = rate * 2.0 + capacity(rate)
    assert abs(got - expected) <= 0.1 * expected, (got, expected)


def _hammer(url: str, key: str, rate: float, start: float, end: float, out) -> None:
    out.put(_run_for(RateLimiter(RedisBroker(url)), key, rate, start, end, sleep=False))


def test_two_processes_share_one_bucket(redis_server, r):
    rate, seconds = 200.0, 3.0
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    start = time.time() + 2.0  # time for both to start
    procs = [ctx.Process(target=_hammer, args=(redis_server.url, keys.rate_task("t.shared"), rate,
                                               start, start + seconds, out)) for _ in range(2)]
    for p in procs:
        p.start()
    counts = [out.get(timeout=30) for _ in procs]
    for p in procs:
        p.join(10)
        assert p.exitcode == 0
    expected = rate * seconds + capacity(rate)
    assert all(c > 0 for c in counts), counts  # both really took part
    assert abs(sum(counts) - expected) <= 0.1 * expected, (counts, expected)
