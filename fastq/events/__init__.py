"""Task and worker events (``fastq worker -E``), docs/events.md.

A child collects its tasks' events as it runs them and publishes a round's events at once, after
the round's outcomes are written (:mod:`.publisher`): one entry on fastq's capped stream
(``fastq:events``, read by ``fastq events`` and the dashboard) and one Celery event message (a
list, as Celery 4+ batches them) on the channel Celery's Redis transport uses, so an unchanged
Flower or celery-exporter on the same Redis sees the tasks. The supervisor publishes the
worker's online / heartbeat / offline events and answers Celery's remote-control broadcasts
(:mod:`.mailbox`), so Flower's worker pages fill in.
"""
