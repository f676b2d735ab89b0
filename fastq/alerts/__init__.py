"""Alerts (docs/alerts.md): task failures, dead-letter growth, queue age and lost workers, sent to
Python callbacks and webhooks by a background thread, never from a task's path.

- :mod:`fastq.alerts.alert`: what an alert is, and its JSON payload;
- :mod:`fastq.alerts.delivery`: the per-process delivery thread (retries, back-off, timeout);
- :mod:`fastq.alerts.failures`: the middleware that counts a child's task failures;
- :mod:`fastq.alerts.checks`: the supervisor's periodic checks (DLQ, queue age, worker loss).
"""
from fastq.alerts.alert import Alert

__all__ = ["Alert"]
