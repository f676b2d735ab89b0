"""Never acknowledge an outcome that was not written (issue 6, item 7), tried as a user would: on
real Redis servers (some of this test's own: out of memory, restarted, frozen, on a unix socket,
with a password) and real worker processes."""
from __future__ import annotations

import math
import os
import signal
import threading
import time

import msgpack
import pytest
import redis

from fastq import App, keys, states
from fastq._core import unpack_value
from fastq.broker import Finish
from fastq.broker.embedded import free_port
from fastq.errors import BrokerUnavailable, DeadLettered, EncodeError, NotRegistered
from fastq.errors import TimeoutError as FastqTimeoutError
from fastq.message import Message
from fastq.result import AsyncResult
from fastq.testing import RedisServer
from fastq.worker import health, outcome
from fastq.worker.supervisor import Supervisor
from tests.conftest import WorkerProcess, app_fixture, wait_for, worker_fixture

MODULE = "tests.apps.outcomes"
oapp = app_fixture(MODULE)
worker = worker_fixture(MODULE, 1, "oapp")


# -- a server of the test's own: fastq.testing.RedisServer with a client, a password, a socket --
class PrivateRedis(RedisServer):
    """A private server without persistence, started with ``args`` (and a password, and a unix
    socket, when asked); ``client`` talks to it over TCP."""

    def __init__(self, *args: str, password: str | None = None, unix: bool = False):
        super().__init__(extra_args=[])
        self.password = password
        self.socket = os.path.join(self.dir, "redis.sock") if unix else None
        self.extra_args = [*(["--requirepass", password] if password else []),
                           *(["--unixsocket", self.socket, "--unixsocketperm", "700"] if unix
                             else []), *args]
        self.client = redis.Redis(port=self.port, password=password)

    @property
    def url(self) -> str:
        if self.socket:
            return f"unix://{self.socket}"
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    @url.setter
    def url(self, _value: str) -> None:  # RedisServer sets its plain URL; ours is computed
        pass

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.resume()  # a frozen server cannot act on SIGTERM
        super().stop(timeout)
        self.client.close()

    def restart(self) -> None:
        self.stop()
        self.start()


@pytest.fixture
def private_redis():
    """Factory: ``private_redis(*args, password=None, unix=False)``, and ``workers`` on them."""
    servers: list[PrivateRedis] = []
    workers: list[tuple[WorkerProcess, PrivateRedis]] = []

    def start(*args: str, **kwargs) -> PrivateRedis:
        servers.append(PrivateRedis(*args, **kwargs).start())
        return servers[-1]

    def start_worker(server: PrivateRedis, name: str, wait: bool = True,
                     env: dict[str, str] | None = None) -> WorkerProcess:
        w = WorkerProcess(MODULE, 1, "default", name, [],
                          {"FASTQ_BROKER_URL": server.url, **(env or {})})
        workers.append((w, server))
        if wait:
            w.wait_ready(server.client)
        return w

    start.worker = start_worker  # type: ignore[attr-defined]
    yield start
    for w, server in workers:
        pids = _child_pids(w, server)
        w.stop(signal.SIGKILL)
        for pid in pids:
            _kill(pid)
    for server in servers:
        server.cleanup()


def _child_pids(w: WorkerProcess, server: PrivateRedis) -> list[int]:
    try:
        return list(w.child_pids(server.client).values())
    except redis.RedisError:
        return []


def _kill(pid: int, sig: int = signal.SIGKILL) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


@pytest.fixture
def point(oapp):
    """``point(url)``: this process's app of tests/apps/outcomes.py sends to ``url`` for the
    test (reconnected; the session's server again afterwards)."""
    session_url = oapp.conf.broker_url

    def to(url: str) -> None:
        oapp.close()
        oapp.conf.broker_url = url

    yield to
    to(session_url)


def _records(client: redis.Redis, task_id: str) -> list:
    return [unpack_value(raw) for raw in client.lrange(keys.result(task_id), 0, -1)]


# -- 1. out of memory: nothing is acked without its outcome -----------------------------------
def test_out_of_memory_acks_nothing_unwritten_and_every_task_completes_once_freed(
        oapp, private_redis, point):
    from tests.apps.outcomes import flaky, gated, square

    srv = private_redis("--maxmemory-policy", "noeviction")
    client = srv.client
    point(srv.url)
    w = private_redis.worker(srv, "oom", env={"FASTQ_HEARTBEAT_S": "0.2"})
    (child,) = w.child_pids(client).values()
    client.set("gate", 1)
    with oapp.batch():  # one fetch takes them all; the first holds the child until the gate opens
        first = gated.delay(0)
        squares = square.map(range(1, 31))
        retried = [flaky.delay(n) for n in range(5)]
    every = [first, *squares, *retried]
    stream = keys.stream("default", 2)
    wait_for(lambda: client.xpending(stream, keys.GROUP)["pending"] == len(every), 10,
             message="the batch to be fetched")
    # Full: every write that could grow memory is refused (a margin far below what is used, so
    # that a freed client buffer cannot let one through and make this test flaky).
    client.config_set("maxmemory", int(client.info("memory")["used_memory"]) // 2)
    with pytest.raises(redis.exceptions.OutOfMemoryError):
        client.set("probe", 1)
    client.delete("gate")  # DEL is allowed under OOM: the tasks run, their outcomes are refused
    wait_for(lambda: "broker out of memory" in w.output(), 10, message="the child's log line")
    late = private_redis.worker(srv, "oom-late", wait=False)  # a worker started while it is full
    time.sleep(2.0)
    # Nothing acked, nothing written, nothing half-done; nobody crashed.
    assert client.xpending(stream, keys.GROUP)["pending"] == len(every)
    assert client.xlen(stream) == len(every)
    assert not client.keys("fastq:r:*") and not client.keys("fastq:s:*")
    assert client.zcard(keys.delayed("default")) == 0
    assert client.xlen(keys.dlq("default")) == 0
    for proc in (w, late):
        out = proc.output()
        assert proc.proc.poll() is None, out
        assert "child crashed" not in out and "child exited" not in out, out
    assert "out of memory" in late.output()
    # Freed: every task completes, with exactly one record, and the retried ones came back.
    client.config_set("maxmemory", 0)
    assert first.get(timeout=30) == 0
    assert [r.get(timeout=30) for r in squares] == [n * n for n in range(1, 31)]
    assert [r.get(timeout=30) for r in retried] == list(range(5))
    for r in every:
        assert client.llen(keys.result(r.id)) == 1
    wait_for(lambda: w.child_pids(client), 5, message="the child's heartbeat")
    assert w.child_pids(client)[0] == child  # the same child throughout
    late.wait_ready(client)
    assert client.xlen(stream) == 0 and client.zcard(keys.delayed("default")) == 0


# -- 2. one task, one terminal record -----------------------------------------------------------
def test_a_worker_paused_past_its_lease_does_not_add_a_second_record(oapp, worker, r):
    from tests.apps.outcomes import held

    fast = {"FASTQ_LEASE_MS": "1000", "FASTQ_RECLAIM_INTERVAL_S": "0.2",
            "FASTQ_HEARTBEAT_S": "0.1"}
    a = worker(name="paused", env=fast)
    res = held.delay("t", 1.5)
    wait_for(lambda: r.llen("starts:t") == 1, 10, message="the first run to start")
    (a_child,) = a.child_pids(r).values()
    for pid in (a.proc.pid, a_child):  # the supervisor too: it would renew the lease
        os.kill(pid, signal.SIGSTOP)
    try:
        b = worker(name="rescuer", env=fast)
        (b_child,) = b.child_pids(r).values()
        assert res.get(timeout=20) == b_child  # reclaimed once the lease ran out, and re-run
    finally:
        for pid in (a_child, a.proc.pid):
            os.kill(pid, signal.SIGCONT)
    # the paused run finishes late and writes its outcome: processed 1 is reported after that
    wait_for(lambda: (raw := r.get(keys.worker("paused:0"))) and
             msgpack.unpackb(raw)["processed"] == 1, 10, message="the late run's write")
    assert r.llen("starts:t") == 2
    assert [rec[1] for rec in _records(r, res.id)] == [b_child]  # one record: the first written
    assert AsyncResult(res.id, res.app).get(timeout=1) == b_child


# -- 3. a result wait is bounded whatever the server does ---------------------------------------
def test_get_with_a_timeout_returns_in_time_against_a_frozen_server(private_redis):
    srv = private_redis()
    app = App("frozen", broker=srv.url)
    try:
        pending = AsyncResult("no-such-task", app)
        with pytest.raises(FastqTimeoutError):
            pending.get(timeout=0.1)  # its wait connection is open now
        srv.proc.send_signal(signal.SIGSTOP)
        for fresh in (False, True):  # on the open connection, and on one still to be made
            if fresh:
                app.close()
            started = time.monotonic()
            with pytest.raises(FastqTimeoutError):
                AsyncResult("no-such-task", app).get(timeout=2)
            assert time.monotonic() - started < 4.5  # 2 s + the margin, not a socket timeout
    finally:
        srv.proc.send_signal(signal.SIGCONT)
        app.close()


# -- 4. a restart without persistence: queues are registered again ------------------------------
def test_queues_are_registered_again_after_a_restart_that_lost_them(oapp, private_redis, point):
    from tests.apps.outcomes import square

    srv = private_redis()
    point(srv.url)
    private_redis.worker(srv, "restarts", env={"FASTQ_BLOCK_MS": "200"})
    assert square.delay(3).get(timeout=10) == 9
    square.apply_async((1,), queue="unserved")
    assert oapp.broker.queues() == ["default", "unserved"]
    srv.restart()
    assert not srv.client.sismember(keys.QUEUES, "unserved")
    # the worker's fetch finds its group gone, re-creates it and registers the queue again
    wait_for(lambda: srv.client.sismember(keys.QUEUES, "default"), 15,
             message="the consumed queue to be registered again")
    square.apply_async((2,), queue="unserved")  # a producer that sent there before the restart
    assert oapp.broker.queues() == ["default", "unserved"]
    assert square.delay(4).get(timeout=15) == 16


# -- 5. a uniqueness key is released when the send fails -----------------------------------------
def test_a_uniqueness_key_is_released_when_packing_the_arguments_fails(oapp, r):
    from tests.apps.outcomes import unique_echo

    with pytest.raises(EncodeError):
        unique_echo.delay(object())  # msgpack cannot carry it
    assert not r.exists(keys.unique("only-one"))
    sent = unique_echo.delay("fine")
    assert r.get(keys.unique("only-one")).decode() == sent.id
    assert r.xlen(keys.stream("default", 2)) == 1
    assert unique_echo.delay("again").id == sent.id  # still unique while queued


# -- 6. dead consumers are removed from the groups -----------------------------------------------
def _consumers(app: App) -> set[str]:
    return {st.name for st in app.broker.consumers("default")}


def test_dead_consumers_are_removed_live_ones_and_holders_kept(oapp, worker, r):
    from tests.apps.outcomes import held

    quick = {"FASTQ_HEARTBEAT_S": "0.2"}
    for name in ("gone-1", "gone-2", "gone-3"):  # restarts under new names, killed cold
        w = worker(name=name, env=quick)
        pids = list(w.child_pids(r).values())
        w.stop(signal.SIGKILL)
        for pid in pids:
            _kill(pid)
    clean = worker(name="clean", env=quick)
    assert "clean:0" in _consumers(oapp)
    assert clean.stop() == 0
    assert "clean:0" not in _consumers(oapp)  # a warm shutdown takes itself out
    holder = worker(name="holder", env=quick)
    job = held.delay("h", 60)
    wait_for(lambda: r.llen("starts:h") == 1, 10, message="the holder to start its task")
    pids = list(holder.child_pids(r).values())
    holder.stop(signal.SIGKILL)
    for pid in pids:
        _kill(pid)
    worker(name="alive", env={**quick, "FASTQ_LEASE_MS": "8000", "FASTQ_RECLAIM_INTERVAL_S": "0.3"})
    dead = {"gone-1:0", "gone-2:0", "gone-3:0", "holder:0"}
    wait_for(lambda: set(r.keys("fastq:w:*")) | set(r.keys("fastq:h:*"))
             == {keys.worker("alive:0").encode(), keys.health("alive").encode()}, 10,
             message="the dead heartbeats and health records to lapse")
    time.sleep(0.7)  # unseen for longer than a heartbeat's lifetime
    assert dead <= _consumers(oapp)
    oapp.conf.heartbeat_s = 0.2
    try:
        maintenance = Supervisor(oapp, 1, ["default"], name="maintenance")
        maintenance._maintenance()
        assert _consumers(oapp) == {"alive:0", "holder:0"}  # holder still holds its task
        r.set("release:h", 1)
        assert job.get(timeout=20)  # reclaimed by alive once the lease ran out, and run
        wait_for(lambda: not any(st.pending for st in oapp.broker.consumers("default")), 10,
                 message="the reclaimed entry to be acked")
        time.sleep(0.7)
        maintenance._maintenance()
        assert _consumers(oapp) == {"alive:0"}
    finally:
        oapp.conf.heartbeat_s = 2.0


# -- 7. no NaN or infinite durations ------------------------------------------------------------
@pytest.mark.parametrize("option", ["countdown", "expires", "soft_time_limit", "time_limit",
                                    "unique_for", "eta"])
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_a_nan_or_infinite_duration_is_a_clear_error(oapp, r, option, value):
    from tests.apps.outcomes import square

    with pytest.raises(ValueError, match=f"{option} must be .*finite"):
        square.apply_async((1,), **{option: value})
    assert r.xlen(keys.stream("default", 2)) == 0 and r.zcard(keys.delayed("default")) == 0


@pytest.mark.parametrize("option", ["soft_time_limit", "time_limit", "unique_for",
                                    "default_retry_delay", "retry_backoff", "retry_backoff_max"])
def test_a_nan_task_option_is_refused_when_the_task_is_declared(option):
    with pytest.raises(ValueError, match=fr"{option} must be >= 0 \(a finite number of seconds\)"):
        App("nan").task(name=f"nan.{option}", **{option: math.nan})(lambda: None)


def test_an_infinite_retry_delay_is_refused_when_the_task_is_declared():
    with pytest.raises(ValueError, match="retry_schedule delays must be >= 0 .a finite"):
        App("nan").task(name="nan.schedule", retry_schedule=[1, math.inf])(lambda: None)


def test_a_negative_countdown_has_the_same_error(oapp):
    from tests.apps.outcomes import square

    with pytest.raises(ValueError, match=r"countdown must be >= 0 \(a finite number of seconds\)"):
        square.apply_async((1,), countdown=-1)


# -- 8. unix sockets and passwords --------------------------------------------------------------
@pytest.mark.parametrize("how", ["unix", "password"])
def test_a_producer_and_a_worker_over_a_unix_socket_or_with_a_password(oapp, private_redis, point,
                                                                       how):
    from tests.apps.outcomes import square

    srv = private_redis(unix=True) if how == "unix" else private_redis(password="s3cret")
    point(srv.url)
    w = private_redis.worker(srv, f"over-{how}")
    assert square.delay(7).get(timeout=10) == 49
    assert square.map(range(3))[-1].get(timeout=10) == 4
    assert "Traceback" not in w.output()


# -- 9. a wrong URL fails fast; a broker that worked rides out an outage ------------------------
@pytest.mark.parametrize("url", ["redis://127.0.0.1:{free}/0", "rediss://127.0.0.1:{port}/0",
                                 "redis://:hunter2@127.0.0.1:{secured}/0"])
def test_a_wrong_url_fails_the_first_send_fast_and_names_the_url(private_redis, redis_server,
                                                                   url):
    secured = private_redis(password="right") if "hunter2" in url else None
    url = url.format(free=free_port(), port=redis_server.port,
                     secured=secured.port if secured else 0)
    app = App("wrong", broker=url)
    task = app.task(name="wrong.noop")(lambda: None)
    started = time.monotonic()
    with pytest.raises(BrokerUnavailable) as caught:
        task.delay()
    assert time.monotonic() - started < 15  # no retry windows: a connect timeout at most
    message = str(caught.value)
    assert "cannot reach the broker at" in message and "127.0.0.1" in message, message
    assert "hunter2" not in message  # the password is not shown
    app.close()


def test_a_broker_that_worked_before_is_waited_for_through_a_restart(private_redis):
    srv = private_redis()
    app = App("outage", broker=srv.url)
    task = app.task(name="outage.noop")(lambda: None)
    task.delay()
    srv.stop()
    threading.Timer(1.0, srv.start).start()
    task.delay()  # retried until the server is back
    assert srv.client.xlen(keys.stream("default", 2)) == 1
    app.close()


# -- 10. a dead-lettered task has a FAILURE result ----------------------------------------------
def test_a_task_that_kills_its_worker_every_time_fails_with_the_poison_reason(oapp, worker, r):
    from tests.apps.outcomes import kills_its_worker

    worker(env={"FASTQ_MAX_DELIVERIES": "2"})
    res = kills_its_worker.delay()
    with pytest.raises(DeadLettered, match="poison: delivered 3 times"):
        res.get(timeout=30)
    assert res.state == states.FAILURE
    assert r.llen(keys.result(res.id)) == 1
    (entry,) = r.xrange(keys.dlq("default"))
    assert entry[1][b"id"].decode() == res.id and entry[1][b"reason"].startswith(b"poison")


def test_an_unknown_task_fails_with_the_reason(oapp, worker, r):
    worker()
    unknown = oapp.send_task("outcomes.no_such_task")
    with pytest.raises(NotRegistered, match="unknown task 'outcomes.no_such_task'"):
        unknown.get(timeout=10)
    assert r.xlen(keys.dlq("default")) == 1
    assert r.llen(keys.result(unknown.id)) == 1


def test_a_task_that_failed_after_its_retries_has_its_own_failure_and_no_second():
    from tests.apps.outcomes import flaky

    done = Finish()
    msg = Message("t-1", flaky.name, attempt=1)  # its last attempt
    failed = outcome.failed(done, flaky, msg, "default", ConnectionError("down"), 0, "c")
    assert failed.state == states.FAILURE and failed.dead_reason.startswith("failed after 2")
    assert len(done.dead) == 1  # dead-lettered, with the error of every attempt
    (record,) = [unpack_value(rec) for task_id, rec in done.results if task_id == "t-1"]
    assert record[0] == states.FAILURE and record[2] == "ConnectionError"


# -- 11. health: only a real stall is unhealthy -------------------------------------------------
def _health(name: str) -> int:
    from click.testing import CliRunner

    from fastq.cli import main

    return CliRunner().invoke(main, ["-A", MODULE, "health", "-w", name]).exit_code


def test_a_new_worker_is_healthy_and_a_warm_shutdown_raises_no_alarm(oapp, worker, r):
    # children blocked in a long fetch take seconds to stop: health records fall in that time
    w = worker(concurrency=2, name="fresh", env={"FASTQ_BLOCK_MS": "6000"})
    wait_for(lambda: r.exists(keys.health("fresh")), 10, message="the first health record")
    assert _health("fresh") == 0  # right away: its children are starting, not stalled
    w.proc.send_signal(signal.SIGTERM)
    wait_for(lambda: (raw := r.get(keys.health("fresh"))) and msgpack.unpackb(raw)["stopping"],
             10, message="a health record written during the warm shutdown")
    assert w.proc.wait(30) == 0
    assert "unhealthy" not in w.output(), w.output()


def test_a_child_that_never_starts_its_loop_is_still_reported():
    child = {"consumer": "w:0", "busy": False, "loop_age_s": None, "looping": False}
    rec = {"quiet_after_s": 6.0, "children": [{**child, "up_s": 1.0}]}
    assert health.problems(rec) == []  # being started
    rec["children"] = [{**child, "up_s": 30.0}]
    assert health.problems(rec) == ["w:0: fetch loop not started 30.0 s after the child started "
                                    "(limit 6.0 s)"]
    assert health.problems({**rec, "stopping": True}) == []  # being stopped
