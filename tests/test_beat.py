"""Periodic tasks: schedule math (pure), the beat's Redis protocol driven by a fake clock, and real
``fastq beat`` / ``fastq worker -B`` processes against the session's real Redis."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import fastq.current
from fastq import App, keys
from fastq._core import decode_message
from fastq.beat import Beat, fire_task_id, fire_time_of, load_entries
from fastq.schedules import crontab, schedule
from tests.conftest import ROOT, wait_for


def utc(*args: int) -> float:
    return datetime(*args, tzinfo=UTC).timestamp()


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M")


# -- schedule math (pure) ---------------------------------------------------------------------
def test_interval_schedule_is_epoch_aligned():
    s = schedule(10)
    assert s.next_fire_after(1000.0) == 1010.0  # strictly after
    assert s.next_fire_after(1005.3) == 1010.0
    assert s.next_fire_after(1009.9999) == 1010.0
    assert s.fires_between(1000, 1030) == [1010.0, 1020.0, 1030.0]  # (a, b]
    assert s.fires_between(1000, 1030, limit=2) == [1020.0, 1030.0]  # the latest ones
    assert s.fires_between(1000, 1009) == []
    assert schedule(timedelta(minutes=1)) == schedule(60.0)
    quarter = schedule(0.25)
    t = 1_700_000_000.0
    fires = quarter.fires_between(t, t + 1)
    assert fires == [t + 0.25, t + 0.5, t + 0.75, t + 1.0]
    # Feeding an instant back in always moves forward (no float fixed point).
    x = t
    for _ in range(1000):
        nxt = quarter.next_fire_after(x)
        assert nxt > x
        x = nxt
    assert x == t + 250
    assert schedule(7, anchor=3).next_fire_after(0) == 3.0
    with pytest.raises(ValueError):
        schedule(0)


def test_crontab_has_celerys_fields_and_meaning():
    every_minute = crontab(tz="UTC")
    assert every_minute.next_fire_after(utc(2024, 5, 1, 12, 0) + 1) == utc(2024, 5, 1, 12, 1)
    c = crontab(minute=30, hour=7, day_of_week="mon-fri", tz="UTC")  # Sat 2024-06-01
    assert iso(c.next_fire_after(utc(2024, 6, 1))) == "2024-06-03 07:30"
    assert iso(crontab(0, 0, day_of_week=0, tz="UTC").next_fire_after(utc(2024, 6, 3))) == "2024-06-09 00:00"
    assert iso(crontab(0, 0, day_of_week="sun", tz="UTC").next_fire_after(utc(2024, 6, 3))) == "2024-06-09 00:00"
    # Celery: a day must match day_of_month AND day_of_week (Friday the 13th), unlike cron's OR.
    friday13 = crontab(0, 0, day_of_month=13, day_of_week=5, tz="UTC")
    assert iso(friday13.next_fire_after(utc(2024, 1, 1))) == "2024-09-13 00:00"
    c = crontab(minute={0, 30}, hour=[9, 17], tz="UTC")
    assert [iso(t) for t in c.fires_between(utc(2024, 1, 1), utc(2024, 1, 1, 18))] == [
        "2024-01-01 09:00", "2024-01-01 09:30", "2024-01-01 17:00", "2024-01-01 17:30"]
    quarterly = crontab(0, 0, day_of_month="1", month_of_year="*/3", tz="UTC")
    assert iso(quarterly.next_fire_after(utc(2024, 2, 1))) == "2024-04-01 00:00"
    for bad in ({"minute": 61}, {"hour": "25"}, {"day_of_week": "funday"},
                {"day_of_month": 30, "month_of_year": 2}):
        with pytest.raises(ValueError):
            crontab(**bad)
    with pytest.raises(ValueError):
        crontab(tz="Mars/Olympus")


def test_crontab_fires_on_the_wall_clock_of_its_time_zone():
    seven = crontab(minute=0, hour=7, tz="America/New_York")
    assert iso(seven.next_fire_after(utc(2024, 1, 15))) == "2024-01-15 12:00"  # EST, UTC-5
    assert iso(seven.next_fire_after(utc(2024, 7, 15))) == "2024-07-15 11:00"  # EDT, UTC-4
    nine = crontab(minute=0, hour=9, tz="Asia/Kolkata")  # UTC+5:30, no DST
    assert iso(nine.next_fire_after(utc(2024, 1, 1))) == "2024-01-01 03:30"


def test_crontab_without_tz_uses_the_app_timezone(monkeypatch, r):
    monkeypatch.setattr(fastq.current, "_app", fastq.current.peek_app())  # restored after the test
    with pytest.raises(ValueError):
        App("tz-bad", timezone="Nowhere/Special")
    app = App("tz", timezone="Asia/Tokyo", beat_schedule={
        "morning": {"task": "t.morning", "schedule": crontab(minute=0, hour=9)}})
    entry = load_entries(app)["morning"]
    assert iso(entry.schedule.next_fire_after(utc(2023, 12, 31, 12))) == "2024-01-01 00:00"  # 09:00 JST
    # Used directly, a crontab without tz takes the current App's timezone.
    assert iso(crontab(minute=0, hour=9).next_fire_after(utc(2023, 12, 31, 12))) == "2024-01-01 00:00"


def test_crontab_across_spring_forward():
    # Europe/Berlin, 2024-03-31: 02:00 CET -> 03:00 CEST (01:00 UTC); 02:xx does not exist.
    daily = crontab(minute=30, hour=2, tz="Europe/Berlin")
    assert [iso(t) for t in daily.fires_between(utc(2024, 3, 29), utc(2024, 4, 2))] == [
        "2024-03-29 01:30", "2024-03-30 01:30",
        "2024-03-31 01:00",  # the skipped 02:30 fires once, at the jump
        "2024-04-01 00:30"]  # then 02:30 CEST
    half_hourly = crontab(minute="*/30", tz="Europe/Berlin")
    got = half_hourly.fires_between(utc(2024, 3, 30, 23), utc(2024, 3, 31, 2))
    assert [iso(t) for t in got] == ["2024-03-30 23:30", "2024-03-31 00:00", "2024-03-31 00:30",
                                     "2024-03-31 01:00", "2024-03-31 01:30", "2024-03-31 02:00"]


def test_crontab_across_fall_back():
    # Europe/Berlin, 2024-10-27: 03:00 CEST -> 02:00 CET (01:00 UTC); 02:xx happens twice.
    daily = crontab(minute=30, hour=2, tz="Europe/Berlin")
    assert [iso(t) for t in daily.fires_between(utc(2024, 10, 25), utc(2024, 10, 29))] == [
        "2024-10-25 00:30", "2024-10-26 00:30",
        "2024-10-27 00:30",  # once, at the first 02:30
        "2024-10-28 01:30"]
    # An entry that fires every hour keeps firing through the repeated hour, every 30 real minutes.
    half_hourly = crontab(minute="*/30", tz="Europe/Berlin")
    got = half_hourly.fires_between(utc(2024, 10, 26, 23), utc(2024, 10, 27, 2, 30))
    assert [iso(t) for t in got] == [
        "2024-10-26 23:30", "2024-10-27 00:00", "2024-10-27 00:30", "2024-10-27 01:00",
        "2024-10-27 01:30", "2024-10-27 02:00", "2024-10-27 02:30"]
    # From inside the first pass (02:45 CEST), the next is the second pass's 02:00 CET.
    assert iso(half_hourly.next_fire_after(utc(2024, 10, 27, 0, 45))) == "2024-10-27 01:00"
    # New York too: 2024-11-03 01:30 happens twice; a daily 01:30 fires at the first (EDT).
    ny = crontab(minute=30, hour=1, tz="America/New_York")
    assert iso(ny.next_fire_after(utc(2024, 11, 3))) == "2024-11-03 05:30"
    assert iso(ny.next_fire_after(utc(2024, 11, 3, 5, 30))) == "2024-11-04 06:30"


def test_fires_between_limit_keeps_the_latest():
    c = crontab(minute="*/5", tz="UTC")
    start, end = utc(2024, 1, 1), utc(2024, 1, 8)
    assert [iso(t) for t in c.fires_between(start, end, limit=3)] == [
        "2024-01-07 23:50", "2024-01-07 23:55", "2024-01-08 00:00"]
    assert len(c.fires_between(start, end, limit=100)) == 100
    yearly = crontab(0, 0, day_of_month=1, month_of_year=1, tz="UTC")
    assert [iso(t) for t in yearly.fires_between(utc(2000, 1, 1), utc(2024, 6, 1), limit=1)] == [
        "2024-01-01 00:00"]


def test_fire_ids_are_deterministic_uuid7_carrying_the_instant():
    a = fire_task_id("report", 1_700_000_000_123)
    assert a == fire_task_id("report", 1_700_000_000_123)
    assert a != fire_task_id("report", 1_700_000_001_123) != fire_task_id("other", 1_700_000_000_123)
    assert fire_time_of(a) == 1_700_000_000.123
    assert fire_time_of("5c4fd7b2-6a8e-4b1e-9d55-7b0b1f0a2c3d") is None  # a uuid4


# -- entries ------------------------------------------------------------------------------------
def test_entries_from_config_and_add_periodic_task(monkeypatch, r):
    monkeypatch.setattr(fastq.current, "_app", fastq.current.peek_app())
    app = App("entries", beat_missed="once", beat_schedule={
        "add-every-10": {"task": "proj.add", "schedule": 10.0, "args": (2, 3),
                         "options": {"queue": "math", "priority": "high", "routing_key": "x"}},
        "hourly": {"task": "proj.tick", "schedule": timedelta(hours=1), "missed": "all"},
    })

    @app.task
    def cleanup(days):
        return days

    name = app.add_periodic_task(crontab(minute=0, hour=4), cleanup, args=(30,), queue="maint")
    app.add_periodic_task(60, "proj.ping", name="ping", missed="skip")
    entries = load_entries(app)
    assert set(entries) == {"add-every-10", "hourly", name, "ping"}
    e = entries["add-every-10"]
    assert (e.task, e.args, e.options, e.missed) == ("proj.add", (2, 3),
                                                    {"queue": "math", "priority": "high"}, "once")
    assert e.schedule == schedule(10)
    assert entries["hourly"].schedule == schedule(3600) and entries["hourly"].missed == "all"
    c = entries[name]
    assert c.task == cleanup.name and c.args == (30,) and c.options == {"queue": "maint"}
    assert c.schedule.tz == "UTC"
    assert name == app.add_periodic_task(crontab(minute=0, hour=4), cleanup, args=(30,),
                                         queue="maint")  # the same call gives the same name
    assert entries["ping"].missed == "skip"
    with pytest.raises(ValueError, match="unsupported options"):
        app.conf.beat_schedule["bad"] = {"task": "x", "schedule": 1, "options": {"colour": 1}}
        load_entries(app)
    app.conf.beat_schedule.pop("bad")
    with pytest.raises(TypeError):
        app.add_periodic_task("every day", "x")
    with pytest.raises(ValueError):
        app.add_periodic_task(1, "x", missed="sometimes")


# -- the beat's Redis protocol, driven by a fake clock --------------------------------------------
T0 = 1_700_000_000.5  # half a second past a multiple of 10


class FakeClock:
    def __init__(self, t: float):
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def beat_app(monkeypatch, r):
    """Factory of Apps on the test Redis whose one entry ``e`` sends to queue ``m``."""
    monkeypatch.setattr(fastq.current, "_app", fastq.current.peek_app())
    made: list[App] = []

    def make(every: float = 10.0, **conf) -> App:
        entry = {"task": "tests.record", "schedule": every, "options": {"queue": "m"}}
        if "missed" in conf:
            entry["missed"] = conf.pop("missed")
        app = App("beat-unit", beat_schedule={"e": entry}, **conf)
        made.append(app)
        return app

    yield make
    for app in made:
        app.close()


def sent(r, queue: str = "m") -> list[float]:
    """Scheduled instants of the messages the beats sent to ``queue``, in send order."""
    return [fire_time_of(decode_message(fields[b"m"]).id)
            for _id, fields in r.xrange(keys.stream(queue, 2))]


@pytest.mark.parametrize("policy, caught_up", [
    ("skip", []),
    ("once", [T0 - 0.5 + 110]),
    ("all", [T0 - 0.5 + k for k in range(20, 111, 10)]),
])
def test_missed_fires_after_downtime_follow_the_policy(beat_app, r, policy, caught_up):
    clock = FakeClock(T0)
    first = Beat(beat_app(), clock=clock)
    assert first.tick() > 0 and first.is_leader
    assert sent(r) == []  # a new entry has missed nothing
    clock.t = T0 + 10
    first.tick()
    assert sent(r) == [T0 - 0.5 + 10]
    first.release()  # a clean exit; then no beat runs for 100 s (10 instants)
    clock.t = T0 + 110
    app = beat_app(missed=policy) if policy == "all" else beat_app(beat_missed=policy)
    second = Beat(app, clock=clock)
    second.tick()
    assert sent(r) == [T0 - 0.5 + 10, *caught_up]
    # Whatever the policy, the missed instants count as handled (a later "all" will not send them).
    assert r.hget(keys.BEAT_LAST, "e") == str(round((T0 - 0.5 + 110) * 1000)).encode()
    clock.t = T0 + 120
    second.tick()
    assert sent(r) == [T0 - 0.5 + 10, *caught_up, T0 - 0.5 + 120]
    # the metrics' counts (fastq/metrics/beat.py): 10 instants were due while no beat ran
    assert first.fires["e"] == 1 and second.fires["e"] == len(caught_up) + 1
    assert +second.misses == ({("e", "downtime"): 10 - len(caught_up)} if policy != "all" else {})


def test_catch_up_of_all_is_capped_to_the_latest(beat_app, r):
    clock = FakeClock(T0)
    b = Beat(beat_app(every=1.0, beat_missed="all"), clock=clock)
    b.tick()
    b.release()
    clock.t = T0 + 1000  # 1000 missed instants
    b2 = Beat(beat_app(every=1.0, beat_missed="all"), clock=clock)
    b2.tick()
    fires = sent(r)
    assert len(fires) == 100
    assert fires == [T0 - 0.5 + k for k in range(901, 1001)]
    assert b2.fires["e"] == 100 and b2.misses == {("e", "downtime"): 900}


def test_a_stalled_beat_counts_the_instants_it_drops(beat_app, r):
    clock = FakeClock(T0)
    b = Beat(beat_app(every=1.0), clock=clock)
    b.tick()
    clock.t = T0 + 1000  # the same beat, 1000 instants late: 100 sent, the rest dropped
    b.tick()
    assert len(sent(r)) == 100 and b.fires["e"] == 100
    assert b.misses == {("e", "stalled"): 900}


def test_a_handover_is_not_downtime(beat_app, r):
    clock = FakeClock(T0)
    leader = Beat(beat_app(every=1.0), clock=clock, lease_s=5)  # policy: skip
    leader.tick()
    clock.t = T0 + 2
    leader.tick()
    assert sent(r) == [T0 + 0.5, T0 + 1.5]
    r.delete(keys.BEAT_LEADER)  # the leader died; its lease ran out
    clock.t = T0 + 6  # seen alive 4 s ago (< 3 leases): the late instants are fired, not skipped
    successor = Beat(beat_app(every=1.0), clock=clock, lease_s=5)
    successor.tick()
    assert sent(r) == [T0 + 0.5 + k for k in range(6)]


def test_two_beats_that_both_think_they_lead_never_fire_an_instant_twice(beat_app, r):
    clock = FakeClock(T0)
    a = Beat(beat_app(every=1.0), clock=clock, beat_id="a")
    b = Beat(beat_app(every=1.0), clock=clock, beat_id="b")
    a.tick()
    b.tick()  # a standby: the lease is a's
    assert a.is_leader and not b.is_leader
    clock.t = T0 + 1
    a.tick()
    entry_a, entry_b = a.entries["e"], b.entries["e"]
    instant = T0 + 0.5
    assert sent(r) == [instant]
    assert r.exists(keys.beat_fired("e", round(instant * 1000)))
    # a pauses past its lease; b takes the lease and fires on; a wakes up still believing it leads.
    r.delete(keys.BEAT_LEADER)
    clock.t = T0 + 2
    b.tick()
    assert b.is_leader and a.is_leader
    assert sent(r) == [instant, instant + 1]
    assert not a._fire(entry_a, instant + 2)  # fenced: not the lease holder
    assert not a.is_leader
    # Even a beat holding the lease cannot send an instant that was sent already.
    assert not b._fire(entry_b, instant) and not b._fire(entry_b, instant + 1)
    r.set(keys.BEAT_LEADER, "a")
    a.is_leader = True
    assert not a._fire(entry_a, instant + 1)  # the dedup key
    r.delete(keys.beat_fired("e", round((instant + 1) * 1000)))
    assert not a._fire(entry_a, instant + 1)  # and, without it, the last-fired hash
    assert sent(r) == [instant, instant + 1]


def test_a_delayed_fire_is_recorded_and_sent_in_one_step(beat_app, r):
    app = beat_app()
    app.conf.beat_schedule["e"]["options"]["countdown"] = 60
    clock = FakeClock(T0)
    b = Beat(app, clock=clock)
    b.tick()
    clock.t = T0 + 10
    b.tick()
    fire_ms = round((T0 - 0.5 + 10) * 1000)
    [(member, due_ms)] = r.zrange(keys.delayed("m"), 0, -1, withscores=True)
    assert decode_message(member[1:]).id == fire_task_id("e", fire_ms)  # level byte, envelope
    assert due_ms >= (T0 + 10 + 59) * 1000 and r.xlen(keys.stream("m", 2)) == 0
    assert r.hget(keys.BEAT_LAST, "e") == str(fire_ms).encode() and b.fired == 1


def test_a_refused_fire_writes_nothing_is_logged_and_the_beat_goes_on(beat_app, r, capsys):
    clock = FakeClock(T0)
    b = Beat(beat_app(), clock=clock)
    b.tick()
    baseline = r.hget(keys.BEAT_LAST, "e")
    r.set(keys.stream("m", 2), "not a stream")  # someone clobbered the queue's stream key
    clock.t = T0 + 10
    b.tick()  # refused: logged, the instant is not retried, the lease is kept
    assert b.is_leader and b.fired == 0
    assert "beat fire refused by the broker" in capsys.readouterr().out
    fire_ms = round((T0 - 0.5 + 10) * 1000)
    assert not r.exists(keys.beat_fired("e", fire_ms))  # nothing of the fire was written
    assert r.hget(keys.BEAT_LAST, "e") == baseline
    r.delete(keys.stream("m", 2))
    clock.t = T0 + 20
    b.tick()
    assert sent(r) == [T0 - 0.5 + 20] and b.fired == 1


def test_the_beat_runs_on_the_memory_broker(monkeypatch):
    monkeypatch.setattr(fastq.current, "_app", fastq.current.peek_app())
    url = f"memory://{uuid.uuid4().hex}"
    entry = {"task": "tests.record", "schedule": 10.0, "options": {"queue": "m"}}
    app = App("beat-mem", broker=url, beat_schedule={"e": entry})
    try:
        clock = FakeClock(T0)
        leader, standby = Beat(app, clock=clock, beat_id="a"), Beat(app, clock=clock, beat_id="b")
        leader.tick()
        standby.tick()
        assert leader.is_leader and not standby.is_leader
        for k in (1, 2):
            clock.t = T0 + 10 * k
            leader.tick()
            standby.tick()
        app.broker.prepare(["m"])
        fired = [fire_time_of(decode_message(data).id)
                 for _skey, _level, _eid, data in app.broker.fetch("t", ["m"], 10, 0)]
        assert fired == [T0 - 0.5 + 10, T0 - 0.5 + 20] and leader.fired == 2
        assert app.broker.beat_last_fired() == {"e": round((T0 - 0.5 + 20) * 1000)}
        leader.release()
        clock.t = T0 + 21
        standby.tick()  # takes over at once, nothing missed
        assert standby.is_leader and standby.fired == 0
    finally:
        app.broker.clear()
        app.close()


# -- real processes --------------------------------------------------------------------------------
LEASE_S = 2.0
BEAT_ENV = {"FASTQ_BEAT_LEASE_S": str(LEASE_S)}


class BeatProcess:
    def __init__(self, n: int, *extra: str):
        self.log = tempfile.NamedTemporaryFile(prefix=f"fastq-beat{n}-", suffix=".log", delete=False)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "fastq", "-A", "tests.apps.beat_app", "beat", "-l", "info",
             *extra],
            stdout=self.log, stderr=subprocess.STDOUT, cwd=str(ROOT),
            env={**os.environ, "PYTHONPATH": str(ROOT), **BEAT_ENV})

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        return Path(self.log.name).read_text()

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(15)


@pytest.fixture
def start_beat(r):
    beats: list[BeatProcess] = []

    def start(*extra: str) -> BeatProcess:
        b = BeatProcess(len(beats), *extra)
        beats.append(b)
        return b

    yield start
    for b in beats:
        if b.proc.poll() is None:
            b.proc.kill()
            b.proc.wait()


def leader_pid(r) -> int | None:
    holder = r.get(keys.BEAT_LEADER)
    return int(holder.decode().rsplit(":", 2)[1]) if holder else None


def stream_fires(r) -> list[tuple[float, float]]:
    """(scheduled instant, time the message was added) of each message in queue ``beat``."""
    out = []
    for entry_id, fields in r.xrange(keys.stream("beat", 2)):
        added = int(entry_id.split(b"-")[0]) / 1000
        out.append((fire_time_of(decode_message(fields[b"m"]).id), added))
    return out


def assert_each_second_once(instants: list[float]) -> None:
    assert len(instants) == len(set(instants)), f"an instant fired twice: {sorted(instants)}"
    ordered = sorted(instants)
    assert all(t == int(t) for t in ordered)
    assert [b - a for a, b in zip(ordered, ordered[1:], strict=False)] == [1.0] * (len(ordered) - 1), \
        f"a gap: {ordered}"


def test_two_beat_processes_fire_each_instant_once(r, start_worker, start_beat):
    start_worker(concurrency=1, queues="beat", module="tests.apps.beat_app")
    beats = [start_beat(), start_beat()]
    wait_for(lambda: leader_pid(r), 15, message="a leader")
    t0 = time.time()
    time.sleep(10)
    t1 = time.time()
    for b in beats:  # both at once: a follower outliving the leader would take over, rightly
        b.proc.send_signal(signal.SIGTERM)
    for b in beats:
        assert b.proc.wait(15) == 0, b.output()
    wait_for(lambda: r.xlen(keys.stream("beat", 2)) == 0, 15, message="the worker to drain")
    time.sleep(0.2)
    records = [line.decode().split() for line in r.lrange("beat:fires", 0, -1)]
    instants = [fire_time_of(task_id) for task_id, _ran in records]
    assert abs(len(instants) - (t1 - t0)) <= 1, (len(instants), t1 - t0)
    assert_each_second_once(instants)
    # Sent at the instant: the worker ran most of them well within a second.
    late = sorted(float(ran) - fire_time_of(task_id) for task_id, ran in records)
    assert late[len(late) // 2] < 0.5, late
    # One beat led throughout; the other never fired.
    firing = [b for b in beats if "beat fired" in b.output()]
    assert len(firing) == 1
    assert not r.exists(keys.BEAT_LEADER)  # released on exit


def test_the_lease_moves_when_the_leader_is_killed(r, start_beat):
    beats = {b.pid: b for b in (start_beat(), start_beat())}
    first = wait_for(lambda: leader_pid(r), 15, message="a leader")
    wait_for(lambda: len(stream_fires(r)) >= 2, 10, message="fires")
    before = stream_fires(r)
    beats[first].stop(signal.SIGKILL)
    killed_at = time.time()
    (other,) = set(beats) - {first}
    wait_for(lambda: leader_pid(r) == other, LEASE_S + 2, interval=0.01, message="the other to lead")
    took_over = time.time() - killed_at
    assert took_over <= LEASE_S + 0.3, took_over
    wait_for(lambda: max(t for t, _ in stream_fires(r)) >= killed_at + LEASE_S + 1, 10,
             message="fires from the new leader")
    assert beats[other].stop() == 0
    fires = stream_fires(r)
    # Every second once, the ones that fell due during the handover included (sent late).
    assert_each_second_once([t for t, _ in fires])
    assert "catching up" in beats[other].output()
    # The healthy leader sent on time.
    assert all(added - t < 0.25 for t, added in before), before


def test_a_paused_leader_does_not_fire_again_when_it_wakes(r, start_beat):
    beats = {b.pid: b for b in (start_beat(), start_beat())}
    first = wait_for(lambda: leader_pid(r), 15, message="a leader")
    wait_for(lambda: len(stream_fires(r)) >= 1, 10, message="fires")
    os.kill(first, signal.SIGSTOP)  # a long pause: its lease runs out, the other takes over
    (other,) = set(beats) - {first}
    wait_for(lambda: leader_pid(r) == other, LEASE_S + 2, interval=0.01, message="the other to lead")
    time.sleep(1.0)
    os.kill(first, signal.SIGCONT)  # wakes up believing it leads, with instants due
    time.sleep(1.5)
    assert leader_pid(r) == other
    for b in beats.values():
        assert b.stop() == 0, b.output()
    assert_each_second_once([t for t, _ in stream_fires(r)])
    assert "beat lost the leader lease" in beats[first].output()


def test_worker_with_embedded_beat_fires(r, start_worker):
    worker = start_worker(concurrency=1, queues="beat", module="tests.apps.beat_app",
                          extra=["-B"], env=BEAT_ENV)
    wait_for(lambda: r.llen("beat:fires") >= 3, 15, message="fires from worker -B")
    beat_pid = leader_pid(r)
    assert beat_pid not in (None, worker.proc.pid)  # a process of its own
    assert worker.stop() == 0
    assert not r.exists(keys.BEAT_LEADER)  # the beat stopped with the worker and let go
    instants = [fire_time_of(line.split()[0].decode()) for line in r.lrange("beat:fires", 0, -1)]
    assert_each_second_once(instants)
    with pytest.raises(ProcessLookupError):
        os.kill(beat_pid, 0)


def test_worker_with_embedded_beat_serves_its_fires(r, start_worker):
    """``worker -B --metrics-port``: the beat's process writes its figures into the worker's
    metrics files; the worker's /metrics shows them with its own."""
    import re
    import socket
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    worker = start_worker(concurrency=1, queues="beat", module="tests.apps.beat_app",
                          extra=["-B", "--metrics-port", str(port), "--metrics-host",
                                 "127.0.0.1"], env=BEAT_ENV)

    def fired_twice():
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
                text = resp.read().decode()
        except OSError:
            return None
        found = re.search(r'^fastq_beat_fires_total\{entry="every-second"\} (\S+)$', text, re.M)
        return text if found and float(found.group(1)) >= 2 else None

    text = wait_for(fired_twice, 15, interval=0.2, message="the embedded beat's fires")
    assert re.search(r'^fastq_beat_leader\{beat="[^"]+"\} 1\.0$', text, re.M), text
    assert re.search(r'^celery_worker_up\{hostname="[^"]+"\} 1\.0$', text, re.M)  # the worker's
    assert worker.stop() == 0


def test_beat_serves_its_fires_on_metrics_port(r, start_beat):
    """``fastq beat --metrics-port``: the entry's fires counted as they are sent, and the
    leader flag (docs/metrics.md)."""
    import re
    import socket
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    beat = start_beat("--metrics-port", str(port), "--metrics-host", "127.0.0.1")

    def scrape() -> str | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
                return resp.read().decode()
        except OSError:
            return None

    def fired_twice():
        text = scrape()
        found = text and re.search(r'^fastq_beat_fires_total\{entry="every-second"\} (\S+)$',
                                   text, re.M)
        return text if found and float(found.group(1)) >= 2 else None

    text = wait_for(fired_twice, 15, interval=0.2, message="two fires counted")
    assert re.search(r'^fastq_beat_leader\{beat="[^"]+"\} 1\.0$', text, re.M), text
    sent_now = r.xlen(keys.stream("beat", 2))
    counted = float(re.search(r'fastq_beat_fires_total\{entry="every-second"\} (\S+)',
                              scrape()).group(1))
    assert counted <= sent_now  # counted once sent, never ahead of the stream
    assert beat.stop() == 0
