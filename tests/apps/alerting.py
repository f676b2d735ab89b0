"""An app with an ``app.on_alert`` callback, and a plain function for ``alert_callbacks``: both
append each alert they get, as a JSON line, to the file named by ``ALERT_SINK``."""
from __future__ import annotations

import json
import os

from fastq import App

app = App("alerting")


def _write(source: str, alert) -> None:
    with open(os.environ["ALERT_SINK"], "a") as f:
        f.write(json.dumps({"source": source, **alert.payload()}) + "\n")


@app.on_alert
def on_alert(alert) -> None:
    _write("on_alert", alert)


def record(alert) -> None:
    """Named in FASTQ_ALERT_CALLBACKS=tests.apps.alerting:record."""
    _write("setting", alert)


@app.task
def fail(message="boom"):
    raise ValueError(message)
