"""The supervisor's overseer on a real Redis: when it moves delayed messages."""
from __future__ import annotations

import time

from fastq import keys
from fastq.worker.overseer import Overseer
from fastq.worker.slots import Slots


def _overseer(app) -> Overseer:
    return Overseer(app, ["default"], Slots(1), lambda slot: f"t:{slot}", lambda *a: None)


def test_mover_wakes_for_a_message_due_before_the_next_tick(app, r):
    from tests.apps.basic import add

    app.conf.delayed_tick_ms = 5000  # a slow tick: only the due time can explain an early wake
    try:
        overseer = _overseer(app)
        sent = time.monotonic()  # before the send: a slow machine cannot make the gap look short
        add.apply_async((1, 2), countdown=0.3)
        wake = overseer._promote_due(time.monotonic())
        assert 0.29 < wake - sent < 1.0  # when the countdown ends, not at the 5 s tick
        assert r.xlen(keys.stream("default", 2)) == 0
        time.sleep(max(wake - time.monotonic(), 0) + 0.01)
        later = time.monotonic()
        assert overseer._promote_due(later) == later + 5.0  # nothing else waits: the tick
        assert r.xlen(keys.stream("default", 2)) == 1  # moved when due
    finally:
        app.conf.delayed_tick_ms = 20


def test_tick_sleeps_no_longer_than_until_the_next_due_message(app, r):
    from tests.apps.basic import add

    app.conf.delayed_tick_ms = 5000
    try:
        add.apply_async((1, 2), countdown=0.2)
        assert _overseer(app).tick() < 0.3
    finally:
        app.conf.delayed_tick_ms = 20
