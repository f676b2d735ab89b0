"""The beat: sends periodic tasks at their scheduled instants (Celery's ``celery beat``).

Run any number of beats (``fastq -A proj beat``, or ``fastq -A proj worker -B``); they agree
through the broker (docs/beat.md; the atomic steps are ``fastq/broker/lua/beat_*.lua``, the keys
in fastq/keys.py):

- a leader lease ``fastq:beat:leader`` (``SET NX PX``, renewed by a compare-and-extend script every
  third of ``beat_lease_s``, released on exit) decides which beat fires; the others wait for it
  to expire;
- each fire is one atomic broker verb (``beat_fire``) that checks the lease, checks the entry's
  last fired instant in the hash ``fastq:beat:last``, checks and sets the dedup key
  ``fastq:beat:fired:{entry}:{fire_ms}`` (``SET NX PX``), and only then sends the message (to its
  stream, or its delayed set for a countdown/eta) and records the instant. Two beats
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
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import structlog

from fastq import current
from fastq.errors import BrokerRefused, BrokerUnavailable
from fastq.middleware import call_hooks
from fastq.schedules import BaseSchedule, check_missed, task_name_of, to_schedule

if TYPE_CHECKING:
    from fastq.app import App
    from fastq.broker import Broker

log = structlog.get_logger("fastq.beat")

MAX_CATCHUP = 100  # most fires sent for one entry in one catch-up ("all", or a late loop)
MISS_COUNT_MAX = 10_000  # most missed instants counted for one entry at one time (the metrics)
FIRED_TTL_MS = 3_600_000  # how long a fire's dedup key lives (the last-fired hash guards beyond)
HANDOVER_LEASES = 3.0  # a leader seen alive within this many leases ago: a handover, not downtime
ENTRY_FIELDS = frozenset({"task", "schedule", "args", "kwargs", "options", "relative", "missed"})
IGNORED_OPTIONS = frozenset({"exchange", "routing_key", "exchange_type"})  # AMQP-only in Celery


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
        # for the metrics (fastq/metrics/beat.py): fires sent, and instants due but not sent,
        # by entry and why (downtime: no beat ran then; stalled: this beat fell too far behind;
        # failed: the message could not be built or was refused)
        self.fires: Counter[str] = Counter()
        self.misses: Counter[tuple[str, str]] = Counter()
        self._next: dict[str, float] = {}  # entry -> next instant to fire
        self._renew_at = 0.0  # time.monotonic() of the next lease renewal
        self._stop = threading.Event()
        self._broker: Broker | None = None
        self._log = log.bind(beat=self.id)

    @property
    def broker(self) -> Broker:
        """The app's broker with its own connections whose commands time out within the lease
        (a hung server must not hang the beat past it)."""
        if self._broker is None:
            self._broker = self.app.broker.with_timeout(max(1.0, self.lease_s))
        return self._broker

    def _lease_ms(self) -> int:
        return max(1, int(self.lease_s * 1000))

    # -- the lease ----------------------------------------------------------------------------
    def _acquire(self, now: float) -> tuple[bool, int | None]:
        return self.broker.beat_acquire(self.id, self._lease_ms(), int(now * 1000))

    def _renew(self, now: float) -> bool:
        return self.broker.beat_renew(self.id, self._lease_ms(), int(now * 1000))

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
            if self.broker.beat_release(self.id, int(self.clock() * 1000)):
                self._log.info("beat released the leader lease")
        except (BrokerUnavailable, BrokerRefused) as exc:
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
        last = self.broker.beat_last_fired()
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
            self._count_misses(name, "downtime", last_ts, now,
                               sent=0 if policy == "skip" else len(missed))
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
        if not self.broker.beat_advance(self.id, name, ms):
            self._lose("another beat holds it")

    def _fire_due(self, now: float) -> None:
        for name, entry in self.entries.items():
            sent = 0
            while self.is_leader and self._next[name] <= now:
                if sent >= self.max_catchup:  # far behind (a long stall): jump to the present
                    # (from just before the due instant: fires_between excludes its start)
                    self._count_misses(name, "stalled", self._next[name] - 0.001, now, sent=0)
                    self._next[name] = entry.schedule.next_fire_after(now)
                    self._log.warning("beat dropped late fires", entry=name, kept=sent)
                    break
                t = self._next[name]
                self._fire(entry, t)  # a broker error propagates: t stays due and is retried
                self._next[name] = entry.schedule.next_fire_after(t)
                sent += 1

    @property
    def fired(self) -> int:
        """Messages this beat sent."""
        return sum(self.fires.values())

    def _count_misses(self, name: str, why: str, after: float, until: float, sent: int) -> None:
        """Count the instants of (``after``, ``until``] that are not sent (all but ``sent``)."""
        due = len(self.entries[name].schedule.fires_between(after, until, limit=MISS_COUNT_MAX))
        if due > sent:
            self.misses[name, why] += due - sent

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
        except BrokerUnavailable:  # e.g. claiming a uniqueness key: t stays due, retried
            raise
        except Exception:  # bad arguments or options: this instant cannot be sent, go on
            self._log.exception("beat could not build the message", entry=entry.name,
                                task=entry.task, fire_at=_iso(t))
            self.misses[entry.name, "failed"] += 1
            return False
        try:
            result = self.broker.beat_fire(self.id, entry.name, fire_ms, FIRED_TTL_MS, pending)
        except BrokerRefused as exc:  # a key of the wrong type: nothing was written, and the
            # same fire would be refused again; later instants may succeed (the key is fixed)
            self._log.error("beat fire refused by the broker; instant not sent", entry=entry.name,
                            fire_at=_iso(t), error=str(exc))
            self.misses[entry.name, "failed"] += 1
            return False
        if result == -1:
            self._lose("another beat holds it")
            return False
        if result == 0:
            self._log.info("beat: already fired", entry=entry.name, fire_at=_iso(t))
            return False
        self.fires[entry.name] += 1
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
        call_hooks(self.app.hooks.beat_init, self, log=self._log)
        backoff = 0.1
        try:
            while not self._stop.is_set():
                if self.parent_pid is not None and os.getppid() != self.parent_pid:
                    self._log.warning("beat's parent is gone; stopping")
                    break
                try:
                    delay = self.tick()
                    backoff = 0.1
                except (BrokerUnavailable, BrokerRefused, OSError) as exc:
                    # unreachable (or a lease step refused): the lease may be gone meanwhile
                    self._lose(f"broker error: {exc}")
                    logged = self._log.error if isinstance(exc, BrokerRefused) else self._log.warning
                    logged("beat broker error; retrying", error=str(exc), retry_in=backoff)
                    delay, backoff = backoff, min(backoff * 2, 5.0)
                self._stop.wait(min(delay, self.lease_s / 3))
        finally:
            self.release()
            if self._broker is not None and self._broker is not self.app.broker:
                self._broker.close()
            self._log.info("beat stopped", fired=self.fired)

    def stop(self) -> None:
        """Ask :meth:`run` to return (safe from a signal handler or another thread)."""
        self._stop.set()
