"""The app the beat tests run real beat and worker processes on (broker from FASTQ_BROKER_URL).

One entry fires every second into queue ``beat``; ``record_fire`` (run by a worker) appends its
task id - which carries the scheduled instant, see ``fastq.beat.fire_time_of`` - and the time it
ran to the list ``beat:fires``.
"""
from __future__ import annotations

import time

from fastq import App
from fastq.schedules import crontab
from tests.apps import effects

app = App("beat_tests")
app.conf.beat_schedule = {
    "every-second": {"task": "tests.apps.beat_app.record_fire", "schedule": 1.0,
                     "options": {"queue": "beat"}},
}


@app.task(bind=True, queue="beat")
def record_fire(self):
    effects().rpush("beat:fires", f"{self.request.id} {time.time():.3f}")


@app.task(queue="beat")
def yearly():
    pass


# Code-defined entries work too (Celery's add_periodic_task); this one never fires during tests.
app.add_periodic_task(crontab(minute=0, hour=0, day_of_month=1, month_of_year=1), yearly,
                      name="new-year")
