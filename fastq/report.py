"""``fastq report``: what a bug report needs (Celery's ``celery report``): versions of fastq, its
core and its Redis stack, the platform, and the app's settings with secrets masked."""
from __future__ import annotations

import platform
import re
import sys
from importlib import metadata
from typing import Any

SECRET = re.compile(r"(?i)(password|secret|token|passwd|api_?key|credential)")
PACKAGES = ("redis", "hiredis", "pydantic", "msgpack", "orjson", "structlog", "croniter")


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def masked(name: str, value: Any) -> Any:
    """``value`` with passwords in URLs and the values of secret-looking names hidden."""
    from fastq.broker.redis import redacted

    if isinstance(value, str):
        if SECRET.search(name):
            return "********"
        return redacted(value) if "://" in value else value
    if isinstance(value, dict):
        return {k: masked(str(k), v) for k, v in value.items()}
    return value


def report(app: Any) -> str:
    """The report's text: software versions, then the settings, one per line."""
    import fastq
    from fastq import _core

    lines = [
        f"fastq:{fastq.__version__} core:{_core.IMPLEMENTATION} py:{platform.python_version()} "
        f"({platform.python_implementation()})",
        "  ".join(f"{name}:{_version(name)}" for name in PACKAGES),
        f"platform -> system:{platform.system()} arch:{platform.machine()} "
        f"kernel version:{platform.release()} imp:{sys.implementation.name}",
        f"app: {app.main or '__main__'} ({type(app).__module__}.{type(app).__qualname__})",
        f"tasks: {len([n for n in app.tasks if not n.startswith('fastq.')])} registered",
        "",
    ]
    settings = app.settings.model_dump()
    lines += [f"{name}: {masked(name, value)!r}" for name, value in sorted(settings.items())]
    return "\n".join(lines)
