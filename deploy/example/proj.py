"""The example project the Docker image and docker-compose.yml run (``fastq -A proj ...``).

Replace it with your own: copy your package into the image (Dockerfile) and keep ``-A`` pointing
at the module that defines ``app``. The broker comes from ``FASTQ_BROKER_URL``.
"""
from __future__ import annotations

from fastq import App

app = App("proj")
app.conf.beat_schedule = {
    "heartbeat-every-30s": {"task": "proj.heartbeat", "schedule": 30.0},
}


@app.task(name="proj.add")
def add(x: int, y: int) -> int:
    return x + y


@app.task(name="proj.report", soft_time_limit=300, time_limit=320)
def report(day: str) -> str:
    """The longest task of the example: the worker's termination grace period (docker-compose.yml
    stop_grace_period, deploy/k8s/worker.yaml terminationGracePeriodSeconds) must cover its soft
    limit, so that a warm shutdown lets it finish."""
    return day


@app.task(name="proj.heartbeat", ignore_result=True)
def heartbeat() -> None:
    """Fired by beat: keeps a trickle of tasks flowing so the dashboard shows something."""
