"""The beat: sends periodic tasks at their scheduled instants (Celery's ``celery beat``).

Run any number of beats (``fastq -A proj beat``, or ``fastq -A proj worker -B``); they agree in
Redis (docs/beat.md, keys in fastq/keys.py):

- a leader lease ``fastq:beat:leader`` (``SET NX PX``, renewed by a compare-and-extend script every
  third of ``beat_lease_s``, released on exit) decides which beat fires; the others wait for it
  to expire;
- each fire is one Lua script that checks the lease, checks and sets the dedup key
  ``fastq:beat:fired:{entry}:{fire_ms}`` (``SET NX PX``), checks the entry's last fired instant in
  the hash ``fastq:beat:last``, and only then XADDs the message and records the instant. Two beats
  that both think they lead (one paused past its lease, say) never send one instant twice, and a
  message is never recorded as fired without being sent, nor sent without being recorded;
- the hash tells a beat that starts after downtime what it missed: the policy ``skip`` (default),
  ``once`` or ``all`` (capped at ``MAX_CATCHUP``) decides what to do about it. A change of leader is
  not downtime: instants that fell due while the lease moved are fired late, whatever the policy.

Each fired message gets a deterministic task id, a UUIDv7 whose timestamp is the scheduled instant:
:func:`fire_time_of` reads it back, and the same entry and instant always give the same id.
"""
from __future__ import annotations

import hashlib
import inspect
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import redis
import structlog

from fastq import current, keys
from fastq.schedules import BaseSchedule, check_missed, task_name_of, to_schedule

if TYPE_CHECKING:
    from fastq.app import App

log = structlog.get_logger("fastq.beat")

MAX_CATCHUP = 100  # most fires sent for one entry in one catch-up ("all", or a late loop)
FIRED_TTL_MS = 3_600_000  # how long a fire's dedup key lives (the last-fired hash guards beyond)
HANDOVER_LEASES = 3.0  # a leader seen alive within this many leases ago: a handover, not downtime
ENTRY_FIELDS = frozenset({"task", "schedule", "args", "kwargs", "options", "relative", "missed"})
IGNORED_OPTIONS = frozenset({"exchange", "routing_key", "exchange_type"})  # AMQP-only in Celery

# KEYS: leader, seen. ARGV: beat id, lease ms, now ms. -> {1, previous seen} | {0, leader's PTTL}
_ACQUIRE = """
local function take()
  local seen = redis.call('GET', KEYS[2])
  redis.call('SET', KEYS[2], ARGV[3])
  return {1, seen}
end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return take() end
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return take()
end
return {0, redis.call('PTTL', KEYS[1])}
"""
# Compare and extend. KEYS: leader, seen. ARGV: beat id, lease ms, now ms.
_RENEW = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('SET', KEYS[2], ARGV[3])
return 1
"""
# KEYS: leader, seen. ARGV: beat id, now ms.
_RELEASE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('SET', KEYS[2], ARGV[2])
return 1
"""
# Fire one instant: -1 not the leader, 0 already fired, 1 sent and recorded.
# KEYS: leader, fired, last, queues, stream 1..n.
# ARGV: beat id, entry, fire ms, fired ttl ms, then (queue, message) for each stream.
_FIRE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
local last = redis.call('HGET', KEYS[3], ARGV[2])
if last and tonumber(last) >= tonumber(ARGV[3]) then return 0 end
if not redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[4]) then return 0 end
for i = 5, #KEYS do
  local j = 5 + (i - 5) * 2
  redis.call('SADD', KEYS[4], ARGV[j])
  redis.call('XADD', KEYS[i], '*', 'm', ARGV[j + 1])
end
redis.call('HSET', KEYS[3], ARGV[2], ARGV[3])
return 1
"""
# Record an instant as handled without sending (skipped, or the baseline of a new entry).
# KEYS: leader, last. ARGV: beat id, entry, ms.
_ADVANCE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
local last = redis.call('HGET', KEYS[2], ARGV[2])
if not last or tonumber(last) < tonumber(ARGV[3]) then redis.call('HSET', KEYS[2], ARGV[2], ARGV[3]) end
return 1
"""


# -- fire ids ---------------------------------------------------------------------------------
def fire_task_id(entry: str, fire_ms: int) -> str:
    """The task id of ``entry``'s fire at ``fire_ms``: a UUIDv7 with the instant as its timestamp
    and the rest from a hash of (entry, instant), so every beat computes the same id."""
    digest = hashlib.blake2b(f"{entry}\x00{fire_ms}".encode(), digest_size=10).digest()
    rand_a = int.from_bytes(digest[:2], "big") & 0xFFF
    rand_b = int.from_bytes(digest[2:], "big") & ((1 << 62) - 1)
    value = ((fire_ms & ((1 << 48) - 1)) << 80) | (0x7 << 76) | (rand_a << 64) | (0b10 << 62) | rand_b
    return str(uuid.UUID(int=value))


def fire_time_of(task_id: str) -> float | None:
    """The scheduled instant (epoch seconds) of a task a beat sent; None for other task ids."""
    try:
        u = uuid.UUID(task_id)
    except (ValueError, TypeError, AttributeError):
        return None
    return (u.int >> 80) / 1000 if u.version == 7 else None


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")


# -- entries ----------------------------------------------------------------------------------
@dataclass
class Entry:
    """One periodic task: ``task`` (a name) sent with ``args``, ``kwargs`` and ``options`` at each
    instant of ``schedule``; ``missed`` says what to do about instants missed while no beat ran."""

    name: str
    task: str
    schedule: BaseSchedule
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    options: dict = field(default_factory=dict)
    missed: str = "skip"


def _send_options() -> frozenset[str]:
    from fastq.task import Task

    params = inspect.signature(Task.apply_async).parameters.values()
    return frozenset(p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY) - {"task_id"}


def load_entries(app: App) -> dict[str, Entry]:
    """``app.conf.beat_schedule`` (Celery's format, plus ``add_periodic_task`` entries) as Entries;
    a malformed entry is an error here, when the beat starts, not at its first fire."""
    allowed = _send_options()
    entries: dict[str, Entry] = {}
    for name, spec in app.conf.beat_schedule.items():
        where = f"beat_schedule[{name!r}]"
        if not isinstance(spec, dict):
            raise TypeError(f"{where}: expected a dict with 'task' and 'schedule', not {spec!r}")
        unknown = set(spec) - ENTRY_FIELDS
        if unknown:
            raise ValueError(f"{where}: unknown fields {sorted(unknown)}; known: {sorted(ENTRY_FIELDS)}")
        if "task" not in spec or "schedule" not in spec:
            raise ValueError(f"{where}: needs 'task' and 'schedule'")
        try:
            sched = to_schedule(spec["schedule"], app.conf.timezone)
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"{where}: {exc}") from None
        options = {k: v for k, v in (spec.get("options") or {}).items() if k not in IGNORED_OPTIONS}
        bad = set(options) - allowed
        if bad:
            raise ValueError(f"{where}: unsupported options {sorted(bad)}; supported: {sorted(allowed)}")
        args = spec.get("args") or ()
        if isinstance(args, str | bytes) or not hasattr(args, "__iter__"):
            raise TypeError(f"{where}: args must be a tuple or list, not {args!r}")
        entries[str(name)] = Entry(
            name=str(name), task=task_name_of(spec["task"]), schedule=sched, args=tuple(args),
            kwargs=dict(spec.get("kwargs") or {}), options=options,
            missed=check_missed(spec.get("missed", app.conf.beat_missed), where))
    return entries


# -- the beat ---------------------------------------------------------------------------------
class Beat:
    """Fires ``app``'s periodic tasks while it holds the leader lease.

    ``clock`` (epoch seconds; default ``time.time``) decides which instants are due, so tests can
    drive a beat with a fake clock through :meth:`tick`. :meth:`run` loops until :meth:`stop`
    (or until the process ``parent_pid`` is gone, for a beat embedded in a worker).
    """

    def __init__(self, app: App, *, clock: Callable[[], float] = time.time,
                 lease_s: float | None = None, beat_id: str | None = None,
                 max_catchup: int = MAX_CATCHUP, parent_pid: int | None = None):
        self.app = app
        self.clock = clock
        self.lease_s = float(lease_s if lease_s is not None else app.conf.beat_lease_s)
        self.id = beat_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.max_catchup = max_catchup
        self.parent_pid = parent_pid
        self.entries = load_entries(app)
        self.is_leader = False
        self.fired = 0  # messages this beat sent
        self._next: dict[str, float] = {}  # entry -> next instant to fire
        self._renew_at = 0.0  # time.monotonic() of the next lease renewal
        self._stop = threading.Event()
        self._client: redis.Redis | None = None
        self._scripts: dict[str, Any] = {}
        self._log = log.bind(beat=self.id)

    # -- Redis --------------------------------------------------------------------------------
    @property
    def client(self) -> redis.Redis:
        """A client of the broker's Redis with a read timeout (a hung server must not hang the
        beat past its lease)."""
        if self._client is None:
            url = getattr(self.app.broker, "url", None) or ""
            if not url.startswith(("redis://", "rediss://", "unix://")):
                raise TypeError(f"fastq beat needs a Redis broker, not {url or self.app.broker!r}")
            timeout = max(1.0, self.lease_s)
            self._client = redis.Redis.from_url(url, socket_timeout=timeout,
                                                socket_connect_timeout=timeout)
            self._scripts = {name: self._client.register_script(src) for name, src in (
                ("acquire", _ACQUIRE), ("renew", _RENEW), ("release", _RELEASE), ("fire", _FIRE),
                ("advance", _ADVANCE))}
        return self._client

    def _script(self, name: str, keys_: list[str], args: list[Any]) -> Any:
        self.client  # noqa: B018 - connects and registers the scripts
        return self._scripts[name](keys=keys_, args=args)

    def _lease_ms(self) -> int:
        return max(1, int(self.lease_s * 1000))

    # -- the lease ----------------------------------------------------------------------------
    def _acquire(self, now: float) -> tuple[bool, int | None]:
        ok, info = self._script("acquire", [keys.BEAT_LEADER, keys.BEAT_SEEN],
                                [self.id, self._lease_ms(), int(now * 1000)])
        return bool(ok), (int(info) if info is not None else None)

    def _renew(self, now: float) -> bool:
        return self._script("renew", [keys.BEAT_LEADER, keys.BEAT_SEEN],
                            [self.id, self._lease_ms(), int(now * 1000)]) == 1

    def _lose(self, why: str) -> None:
        if self.is_leader:
            self._log.warning("beat lost the leader lease", reason=why)
        self.is_leader = False

    def release(self) -> None:
        """Give the lease up (on exit), so that another beat takes over at once."""
        if not self.is_leader:
            return
        self.is_leader = False
        try:
            if self._script("release", [keys.BEAT_LEADER, keys.BEAT_SEEN],
                            [self.id, int(self.clock() * 1000)]):
                self._log.info("beat released the leader lease")
        except redis.RedisError as exc:
            self._log.warning("beat could not release the lease; it expires by itself",
                              error=str(exc))

    # -- one step -------------------------------------------------------------------------------
    def tick(self) -> float:
        """Keep or try to take the lease, fire what is due; returns seconds until the next step
        (the next instant, or the next renewal: at most a third of the lease)."""
        mono = time.monotonic()
        third = self.lease_s / 3
        if self.is_leader and mono >= self._renew_at:
            if self._renew(self.clock()):
                self._renew_at = mono + third
            else:
                self._lose("another beat holds it, or it expired")
        if not self.is_leader:
            now = self.clock()
            ok, info = self._acquire(now)
            if not ok:  # a standby: try again when the leader's lease would have run out
                return third if info is None or info < 0 else min(third, info / 1000 + 0.002)
            self.is_leader = True
            self._renew_at = mono + third
            self._log.info("beat is the leader", lease_s=self.lease_s, entries=len(self.entries))
            self._take_over(now, info)
        self._fire_due(self.clock())
        if not self.is_leader:
            return 0.0
        wait = min(self._next.values(), default=float("inf")) - self.clock()
        return max(0.0, min(wait, self._renew_at - time.monotonic()))

    def _take_over(self, now: float, seen_ms: int | None) -> None:
        """On becoming leader: read what was fired, and deal with what was missed."""
        raw = self.client.hgetall(keys.BEAT_LAST)
        last = {k.decode(): int(v) for k, v in raw.items()}
        handover = seen_ms is not None and now * 1000 - seen_ms <= HANDOVER_LEASES * self.lease_s * 1000
        now_ms = int(now * 1000)
        self._next.clear()
        for name, entry in self.entries.items():
            last_ms = last.get(name)
            if last_ms is None:  # a new entry: nothing was missed; remember since when we know it
                self._advance(name, now_ms)
                self._next[name] = entry.schedule.next_fire_after(now)
                continue
            last_ts = last_ms / 1000
            self._next[name] = entry.schedule.next_fire_after(max(now, last_ts))
            policy = "all" if handover else entry.missed
            missed = entry.schedule.fires_between(
                last_ts, now, limit=self.max_catchup if policy == "all" else 1)
            if not missed:
                continue
            if policy == "skip":
                self._log.info("beat skipped missed fires", entry=name, last_fired=_iso(last_ts),
                               latest_missed=_iso(missed[-1]), policy=policy)
                self._advance(name, round(missed[-1] * 1000))
                continue
            self._log.info("beat catching up", entry=name, fires=len(missed),
                           reason="handover" if handover else "missed", policy=policy,
                           last_fired=_iso(last_ts))
            for t in missed:
                if not self.is_leader:
                    return
                self._fire(entry, t)

    def _advance(self, name: str, ms: int) -> None:
        if self._script("advance", [keys.BEAT_LEADER, keys.BEAT_LAST], [self.id, name, ms]) == -1:
            self._lose("another beat holds it")

    def _fire_due(self, now: float) -> None:
        for name, entry in self.entries.items():
            sent = 0
            while self.is_leader and self._next[name] <= now:
                if sent >= self.max_catchup:  # far behind (a long stall): jump to the present
                    self._next[name] = entry.schedule.next_fire_after(now)
                    self._log.warning("beat dropped late fires", entry=name, kept=sent)
                    break
                t = self._next[name]
                self._fire(entry, t)  # a broker error propagates: t stays due and is retried
                self._next[name] = entry.schedule.next_fire_after(t)
                sent += 1

    def _capture(self, entry: Entry, task_id: str) -> list[tuple]:
        """The messages ``app.send_task`` produces for this fire, collected instead of sent
        (through the App's batch), so that the fire script can send them atomically."""
        with current.capture() as batch:
            self.app.send_task(entry.task, entry.args, entry.kwargs, task_id=task_id, **entry.options)
        return batch.items

    def _fire(self, entry: Entry, t: float) -> bool:
        """Send one instant of one entry unless it was sent already; True if this beat sent it."""
        fire_ms = round(t * 1000)
        task_id = fire_task_id(entry.name, fire_ms)
        try:
            pending = self._capture(entry, task_id)
        except redis.RedisError:
            raise
        except Exception:  # bad arguments or options: this instant cannot be sent, go on
            self._log.exception("beat could not build the message", entry=entry.name,
                                task=entry.task, fire_at=_iso(t))
            return False
        base = [keys.BEAT_LEADER, keys.beat_fired(entry.name, fire_ms), keys.BEAT_LAST, keys.QUEUES]
        head = [self.id, entry.name, fire_ms, FIRED_TTL_MS]
        delayed = any(len(item) > 3 and item[3] for item in pending)
        if delayed:  # countdown/eta in options: record the fire, then send through the broker
            result = self._script("fire", base, head)
            if result == 1:
                self.app.broker.send_many(pending)
        else:
            streams: list[str] = []
            argv: list[Any] = []
            for queue, level, data, *_rest in pending:
                streams.append(keys.stream(queue, level))
                argv += [queue, data]
            result = self._script("fire", base + streams, head + argv)
        if result == -1:
            self._lose("another beat holds it")
            return False
        if result == 0:
            self._log.info("beat: already fired", entry=entry.name, fire_at=_iso(t))
            return False
        self.fired += 1
        self._log.info("beat fired", entry=entry.name, task=entry.task, fire_at=_iso(t),
                       late_ms=int(self.clock() * 1000) - fire_ms, task_id=task_id)
        return True

    # -- the loop -------------------------------------------------------------------------------
    def run(self) -> None:
        """Loop until :meth:`stop`: sleep precisely until the next instant, waking at least every
        third of the lease to renew it; broker errors are logged and retried with back-off."""
        self._log.info("beat starting", entries=sorted(self.entries), lease_s=self.lease_s,
                       timezone=self.app.conf.timezone)
        if not self.entries:
            self._log.warning("beat has no periodic tasks (beat_schedule / add_periodic_task)")
        backoff = 0.1
        try:
            while not self._stop.is_set():
                if self.parent_pid is not None and os.getppid() != self.parent_pid:
                    self._log.warning("beat's parent is gone; stopping")
                    break
                try:
                    delay = self.tick()
                    backoff = 0.1
                except (redis.RedisError, OSError) as exc:
                    self._lose(f"broker error: {exc}")
                    self._log.warning("beat broker error; retrying", error=str(exc), retry_in=backoff)
                    delay, backoff = backoff, min(backoff * 2, 5.0)
                self._stop.wait(min(delay, self.lease_s / 3))
        finally:
            self.release()
            self._log.info("beat stopped", fired=self.fired)

    def stop(self) -> None:
        """Ask :meth:`run` to return (safe from a signal handler or another thread)."""
        self._stop.set()
