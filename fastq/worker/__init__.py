"""The worker: a supervisor (fastq/worker/supervisor.py) and its child processes (child.py)."""
