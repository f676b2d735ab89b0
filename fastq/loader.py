"""Find the App a user means by ``-A proj`` (Celery's forms: ``proj``, ``proj.mod``, ``proj:app``)."""
from __future__ import annotations

import importlib
import os
import sys

from fastq.app import App

DEFAULT_ATTRS = ("app", "celery")


def load_app(spec: str) -> App:
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    module_name, _, attr = spec.partition(":")
    if not attr and "." in module_name:  # "proj.app" may name an attribute of module "proj"
        head, _, tail = module_name.rpartition(".")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError:
            module = importlib.import_module(head)
            attr = tail
    else:
        module = importlib.import_module(module_name)
    if attr:
        app = getattr(module, attr, None)
        if isinstance(app, App):
            return app
        raise click_error(f"{spec!r}: {attr!r} is not a fastq App")
    for name in DEFAULT_ATTRS:
        app = getattr(module, name, None)
        if isinstance(app, App):
            return app
    apps = [v for v in vars(module).values() if isinstance(v, App)]
    if apps:
        return apps[0]
    if hasattr(module, "__path__"):  # a package: Celery's convention is proj/celery.py
        for sub in ("celery", "app", "tasks"):
            try:
                return load_app(f"{module_name}.{sub}")
            except (ModuleNotFoundError, LookupError):
                continue
    raise click_error(f"no fastq App found in module {module_name!r}")


def click_error(message: str) -> LookupError:
    return LookupError(message)
