"""Schedules of periodic tasks: ``crontab`` (Celery's signature and meaning) and ``schedule``
(a fixed interval). See docs/beat.md.

Both answer two questions in epoch seconds: :meth:`next_fire_after` (the first instant strictly
after ``ts``) and :meth:`fires_between` (every instant ``t`` with ``a < t <= b``). Instants are
pure functions of the schedule, never of when a beat happened to start, so any number of beat
processes compute the same instants and can agree in Redis on which ones were fired.

``crontab`` is evaluated on the wall clock of its time zone (``tz``, default: the App setting
``timezone``, itself "UTC" by default). Daylight-saving time:

- a wall time that does not exist (the clock jumps forward over it) fires at the instant of the
  jump, once however many skipped wall times match (``30 2 * * *`` in Europe/Berlin fires at 03:00
  CEST on the spring-forward day);
- a wall time that happens twice (the clock falls back) fires once, at its first occurrence -
  unless the entry fires in every hour (``hour='*'``), which then also fires in the repeated hour,
  so that ``*/15`` keeps firing every 15 real minutes through the night.
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import datetime, timedelta, tzinfo
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

from croniter import CroniterBadDateError, croniter

from fastq import current

__all__ = ["BaseSchedule", "add_periodic_task", "crontab", "schedule", "to_schedule"]

_EPOCH = datetime(1970, 1, 1)
_MAX_SCAN = 100_000  # candidate wall times examined for one next_fire_after (DST collapses)
_TRANSITION_WINDOW = 3 * 3600  # no time zone moves its clock by more than this at once


def _ms(ts: float) -> int:
    """Epoch seconds to whole milliseconds, tolerant of float error just below a boundary."""
    return math.floor(ts * 1000 + 1e-3)


class BaseSchedule:
    """What a beat needs from a schedule; subclass it (or duck-type it) for custom schedules."""

    def next_fire_after(self, ts: float) -> float:
        """The first fire instant strictly after ``ts`` (epoch seconds)."""
        raise NotImplementedError

    def fires_between(self, a: float, b: float, limit: int | None = None) -> list[float]:
        """Fire instants ``t`` with ``a < t <= b``, ascending; with ``limit``, only the last
        ``limit`` of them (the most recent ones)."""
        if limit is not None:
            return self._last_fires(a, b, limit)
        out: list[float] = []
        t = a
        while True:
            t = self.next_fire_after(t)
            if t > b:
                return out
            out.append(t)

    def _last_fires(self, a: float, b: float, limit: int) -> list[float]:
        """The last ``limit`` instants of (a, b], found in windows growing backwards from ``b``."""
        if limit <= 0 or b <= a:
            return []
        width = 60.0
        while True:
            start = max(a, b - width)
            out = self.fires_between(start, b)
            if len(out) >= limit or start == a:
                return out[-limit:]
            width *= 4


class schedule(BaseSchedule):  # noqa: N801 - Celery's name
    """Fire every ``run_every`` seconds (a number or a timedelta).

    Instants are aligned to ``anchor`` (default: the Unix epoch): ``schedule(10)`` fires at
    :00, :10, :20 ... of every minute, whichever beat runs and whenever it started.
    """

    def __init__(self, run_every: float | timedelta, anchor: float = 0.0):
        seconds = run_every.total_seconds() if isinstance(run_every, timedelta) else float(run_every)
        period_ms = round(seconds * 1000)
        if period_ms <= 0:
            raise ValueError(f"an interval schedule needs a period of at least 1 ms, not {run_every!r}")
        self.run_every = timedelta(milliseconds=period_ms)
        self.anchor = anchor
        self._period_ms = period_ms
        self._anchor_ms = round(anchor * 1000)

    @property
    def seconds(self) -> float:
        return self._period_ms / 1000

    def __repr__(self) -> str:
        anchor = f", anchor={self.anchor}" if self._anchor_ms else ""
        return f"<schedule: every {self.seconds:g}s{anchor}>"

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, schedule) and other._period_ms == self._period_ms
                and other._anchor_ms == self._anchor_ms)

    def __hash__(self) -> int:
        return hash((self._period_ms, self._anchor_ms))

    def next_fire_after(self, ts: float) -> float:
        k = (_ms(ts) - self._anchor_ms) // self._period_ms + 1
        return (self._anchor_ms + k * self._period_ms) / 1000

    def fires_between(self, a: float, b: float, limit: int | None = None) -> list[float]:
        p, anchor = self._period_ms, self._anchor_ms
        first = (_ms(a) - anchor) // p + 1
        last = (_ms(b) - anchor) // p
        if limit is not None:
            first = max(first, last - limit + 1)
        return [(anchor + k * p) / 1000 for k in range(first, last + 1)]


def _cron_field(value: Any, name: str) -> str:
    """Celery accepts an int, a cron string ("*/15", "1-5", "mon-fri") or an iterable of them."""
    if isinstance(value, bool):
        raise TypeError(f"crontab {name}: expected an int, a string or an iterable, not {value!r}")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        text = value.replace(" ", "")
        return text or "*"
    if isinstance(value, Iterable):
        items = list(value)
        if not items:
            raise ValueError(f"crontab {name}: empty")
        try:
            items = sorted(items)
        except TypeError:
            pass
        return ",".join(_cron_field(v, name) for v in items)
    raise TypeError(f"crontab {name}: expected an int, a string or an iterable, not {value!r}")


@lru_cache(maxsize=64)
def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except Exception as exc:  # ZoneInfoNotFoundError, ValueError for malformed keys
        raise ValueError(f"unknown time zone {name!r} (use an IANA name such as "
                         f"'Europe/Berlin')") from exc


def _offset(t: float, tz: tzinfo) -> float:
    return datetime.fromtimestamp(t, tz).utcoffset().total_seconds()  # type: ignore[union-attr]


class crontab(BaseSchedule):  # noqa: N801 - Celery's name
    """Celery's ``crontab``: fire when every given field matches the wall clock in ``tz``.

    ``day_of_week`` counts from Sunday (0 or 7) and takes names (``mon-fri``); as in Celery, a
    day must match both ``day_of_month`` and ``day_of_week`` (``day_of_month=13, day_of_week=5``
    is Friday the 13th), unlike classic cron's "either".
    """

    def __init__(self, minute: Any = "*", hour: Any = "*", day_of_week: Any = "*",
                 day_of_month: Any = "*", month_of_year: Any = "*", tz: str | tzinfo | None = None):
        self.minute = _cron_field(minute, "minute")
        self.hour = _cron_field(hour, "hour")
        self.day_of_week = _cron_field(day_of_week, "day_of_week")
        self.day_of_month = _cron_field(day_of_month, "day_of_month")
        self.month_of_year = _cron_field(month_of_year, "month_of_year")
        self.expr = " ".join((self.minute, self.hour, self.day_of_month, self.month_of_year,
                              self.day_of_week))
        if not croniter.is_valid(self.expr):
            raise ValueError(f"invalid crontab {self.expr!r} (minute hour day_of_month "
                             "month_of_year day_of_week)")
        try:  # valid syntax may still name no day at all (February 30th)
            croniter(self.expr, datetime(2000, 1, 1), day_or=False).get_next(datetime)
        except CroniterBadDateError:
            raise ValueError(f"crontab {self.expr!r} never fires") from None
        if isinstance(tz, str):
            _zone(tz)  # fail now, not at the first fire
        self.tz = tz
        # Fires in every hour of the day: then the repeated hour of a fall-back fires too.
        self._every_hour = croniter(self.expr).expanded[1] == ["*"]

    def with_tz(self, tz: str | tzinfo) -> crontab:
        """The same crontab in time zone ``tz`` (how a beat applies the App's ``timezone``)."""
        return crontab(self.minute, self.hour, self.day_of_week, self.day_of_month,
                       self.month_of_year, tz=tz)

    @property
    def zone(self) -> tzinfo:
        """``tz``, else the ``timezone`` setting of the current App, else UTC."""
        tz = self.tz
        if tz is None:
            app = current.peek_app()
            tz = app.conf.timezone if app is not None else "UTC"
        return _zone(tz) if isinstance(tz, str) else tz

    def __repr__(self) -> str:
        tz = self.tz if self.tz is None or isinstance(self.tz, str) else getattr(self.tz, "key", self.tz)
        return f"<crontab: {self.expr} (m/h/dM/MY/dW){'' if tz is None else f' {tz}'}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, crontab) and other.expr == self.expr and other.tz == self.tz

    def __hash__(self) -> int:
        return hash((self.expr, str(self.tz)))

    def next_fire_after(self, ts: float) -> float:
        tz = self.zone
        # A wall time later than ts's own may still be the next instant if the clock is about to
        # fall back; start from the smallest wall time the next few hours can show.
        offset = min(_offset(ts, tz), _offset(ts + _TRANSITION_WINDOW, tz))
        it = croniter(self.expr, _EPOCH + timedelta(seconds=ts + offset), day_or=False)
        best: float | None = None
        for _ in range(_MAX_SCAN):
            wall = it.get_next(datetime)
            instants = self._instants(wall, tz)
            if best is not None and instants[0] >= best:
                return best  # instants only grow from here
            for t in instants:
                if t > ts:
                    best = t if best is None else min(best, t)
                    break
        if best is None:
            raise ValueError(f"{self!r} found no fire time after {ts}")
        return best

    def _instants(self, wall: datetime, tz: tzinfo) -> list[float]:
        """Epoch instants at which the naive wall time ``wall`` happens in ``tz``, ascending
        (one, or two in a repeated hour; a skipped wall time maps to the instant of the jump)."""
        base = (wall - _EPOCH).total_seconds()
        o0 = wall.replace(tzinfo=tz, fold=0).utcoffset().total_seconds()  # type: ignore[union-attr]
        o1 = wall.replace(tzinfo=tz, fold=1).utcoffset().total_seconds()  # type: ignore[union-attr]
        if o0 == o1:
            return [base - o0]
        if o0 > o1:  # clock falls back: the wall time happens twice
            return [base - o0, base - o1] if self._every_hour else [base - o0]
        # Clock jumps forward over this wall time: fire at the jump (first instant with offset o1).
        lo, hi = math.floor(base - o1), math.ceil(base - o0)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if _offset(mid, tz) == o1:
                hi = mid
            else:
                lo = mid
        return [float(hi)]


def to_schedule(value: Any, tz: str | None = None) -> BaseSchedule:
    """What a ``beat_schedule`` entry's ``schedule`` may be: seconds, a timedelta, a
    ``schedule``, a ``crontab`` (given ``tz`` if it has none) or any object with
    ``next_fire_after`` and ``fires_between``."""
    if isinstance(value, crontab):
        return value.with_tz(tz) if value.tz is None and tz is not None else value
    if isinstance(value, BaseSchedule):
        return value
    if isinstance(value, timedelta) or (isinstance(value, int | float) and not isinstance(value, bool)):
        return schedule(value)
    if callable(getattr(value, "next_fire_after", None)) and callable(
            getattr(value, "fires_between", None)):
        return value
    raise TypeError(f"not a schedule: {value!r} (use seconds, a timedelta, fastq.schedules.schedule "
                    "or fastq.schedules.crontab)")


# -- periodic entries: what ``app.add_periodic_task`` writes into ``beat_schedule`` ------------
MISSED_POLICIES = ("skip", "once", "all")


def task_name_of(task: Any) -> str:
    if isinstance(task, str) and task:
        return task
    name = getattr(task, "name", None)
    if isinstance(name, str) and name:
        return name
    raise TypeError(f"not a task or task name: {task!r}")


def check_missed(policy: Any, where: str) -> str:
    if policy not in MISSED_POLICIES:
        raise ValueError(f"{where}: missed must be one of {MISSED_POLICIES}, not {policy!r}")
    return policy


def add_periodic_task(app: Any, schedule: Any, sig: Any, args: Any = (), kwargs: dict | None = None,
                      name: str | None = None, **options: Any) -> str:
    """``app.add_periodic_task``: add an entry to ``app.conf.beat_schedule``; returns its name.

    ``sig`` is a Task or a task name (or a Celery-like signature with ``task``, ``args``,
    ``kwargs``, ``options``). ``missed=`` sets the entry's missed-fire policy; other keyword
    arguments are send options (``queue``, ``priority``, ``expires`` ...). The default name is
    built from the task, its arguments and the schedule, so it is the same in every process.
    """
    if isinstance(getattr(sig, "task", None), str):  # a signature-like object
        args = tuple(getattr(sig, "args", ()) or ()) + tuple(args or ())
        kwargs = {**(getattr(sig, "kwargs", None) or {}), **(kwargs or {})}
        options = {**(getattr(sig, "options", None) or {}), **options}
        sig = sig.task
    task = task_name_of(sig)
    missed = options.pop("missed", None)
    to_schedule(schedule)  # a bad schedule fails here, at the call
    args = tuple(args or ())
    kwargs = dict(kwargs or {})
    entry: dict[str, Any] = {"task": task, "schedule": schedule, "args": args, "kwargs": kwargs,
                             "options": options}
    if missed is not None:
        entry["missed"] = check_missed(missed, "add_periodic_task")
    call = ", ".join([*(repr(a) for a in args), *(f"{k}={v!r}" for k, v in kwargs.items())])
    key = name or f"{task}({call}) {schedule!r}"
    app.conf.beat_schedule[key] = entry
    return key
