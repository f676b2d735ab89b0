"""``celery.contrib``: the pytest plugin (fastq.compat.contrib.pytest)."""
