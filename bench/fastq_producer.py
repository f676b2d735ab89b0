"""The producer half of the fastq adapter (systems.py), run as a subprocess.

A subprocess, so that it imports the fastq its ``PYTHONPATH`` picks (another checkout, say) and
the app module it is given, the same ones as the worker it feeds:

    python fastq_producer.py APP_MODULE settings          # one line: the app's settings
    python fastq_producer.py APP_MODULE send TASK N       # TASK.map(range(N)); the ids, one a line
    python fastq_producer.py APP_MODULE states ID [ID..]  # each task's state, one a line

``TASK`` is an attribute of the module (``noop``, ``noop_stored``, ``echo``). The broker is the
app's (the bench sets ``BENCH_REDIS_URL`` / ``FASTQ_BROKER_URL`` to its private Redis).
"""
from __future__ import annotations

import importlib
import sys
from pathlib import Path

from harness import git_state


def settings(app) -> str:
    import fastq
    from fastq import _core

    c = app.conf
    where = Path(fastq.__file__).parent
    return (f"fastq worker (supervisor + forked children), serializer {c.serializer}, "
            f"prefetch {c.prefetch} per stream, flush_ms {c.flush_ms}, block_ms {c.block_ms}, "
            f"result_expires {c.result_expires:.0f} s, core {_core.IMPLEMENTATION}; "
            f"results in the broker's Redis; fastq from {where}{git_state(where)}")


def main(argv: list[str]) -> None:
    module = importlib.import_module(argv[0])
    command, rest = argv[1], argv[2:]
    app = module.app
    try:
        if command == "settings":
            lines = [settings(app)]
        elif command == "send":
            lines = [res.id for res in getattr(module, rest[0]).map(range(int(rest[1])))]
        elif command == "states":
            lines = [app.AsyncResult(task_id).state for task_id in rest]
        else:
            raise SystemExit(f"unknown command {command!r} (settings, send, states)")
    finally:
        app.close()
    sys.stdout.write("".join(f"{line}\n" for line in lines))


if __name__ == "__main__":
    main(sys.argv[1:])
