"""``Celery``: a fastq App with Celery's constructor, ``app.conf``, task decorator and helpers."""
from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable, Iterable
from typing import Any

from fastq import current
from fastq.app import App
from fastq.compat import signals
from fastq.compat.config import CeleryConf, Router, from_envvar
from fastq.compat.signals import Signal
from fastq.compat.task import (
    CeleryTask,
    ChildTracker,
    ClassHooks,
    TrackStarted,
    overrides_hooks,
)
from fastq.errors import NotRegistered
from fastq.middleware import Hooks

# conf keys that are defaults of every task: changing one reconfigures the registered tasks
TASK_DEFAULT_KEYS = {"task_time_limit", "task_soft_time_limit", "task_ignore_result",
                     "task_track_started", "task_default_rate_limit", "task_annotations"}
_shared_tasks: list[tuple[Callable, dict[str, Any]]] = []  # @shared_task: on every Celery app
_celery_apps: list[Celery] = []


def _unregistered(*_args: Any, **_kwargs: Any) -> None:
    raise NotRegistered("this task is not registered in this process; it runs on a worker")


class Celery(App):
    """``Celery(main, broker=..., backend=..., include=[...], **settings)`` as in Celery."""

    task_class = CeleryTask

    def __init__(self, main: str | None = None, loader: Any = None, backend: str | None = None,
                 amqp: Any = None, events: Any = None, log: Any = None, control: Any = None,
                 set_as_current: bool = True, tasks: Any = None, broker: str | None = None,
                 include: Iterable[str] | None = None, changes: Any = None,
                 config_source: Any = None, fixups: Any = None, task_cls: Any = None,
                 autofinalize: bool = True, namespace: str | None = None,
                 strict_typing: bool = True, **settings: Any):
        self._hooks_key: tuple | None = None
        self._built_hooks = Hooks([])
        self._autodiscover: list[tuple[Any, str]] = []
        self.on_configure = Signal("on_configure")
        self.on_after_configure = Signal("on_after_configure")
        self.on_after_finalize = Signal("on_after_finalize")
        self._configured = True  # not until the conf exists (a read configures the app)
        self._finalized = False
        if isinstance(task_cls, str):
            task_cls = _symbol(task_cls)
        if task_cls is not None:
            self.task_class = task_cls
        super().__init__(main or "__main__")
        # Celery's defaults where fastq's differ: JSON bodies, and the queue named "celery"
        self.settings.serializer = os.environ.get("FASTQ_SERIALIZER", "json")
        self.settings.default_queue = os.environ.get("FASTQ_DEFAULT_QUEUE", "celery")
        self.conf = CeleryConf(self, self.settings)
        preset = {"broker_url": broker or os.environ.get("CELERY_BROKER_URL"),
                  "result_backend": backend or os.environ.get("CELERY_RESULT_BACKEND"),
                  "include": list(include) if include else None}
        self.conf.update({k: v for k, v in preset.items() if v is not None}, **settings)
        if config_source is not None:
            self.config_from_object(config_source, namespace=namespace)
        self._configured = False
        for fn, options in _shared_tasks:
            self._register_shared(fn, options)
        _celery_apps.append(self)
        if set_as_current:
            current.set_app(self)

    def __repr__(self) -> str:
        return f"<Celery {self.main}>"

    # -- hooks: the compat layer's steps, built again when signals or task classes change ----
    @property
    def hooks(self) -> Hooks:
        key = (signals.version(), len(self.tasks), len(self.middleware))
        if key != self._hooks_key:
            steps: list = [ChildTracker()]
            if any(getattr(t, "track_started", False) for t in self.tasks.values()):
                steps.append(TrackStarted())
            if any(overrides_hooks(type(t)) for t in self.tasks.values()):
                steps.append(ClassHooks())
            wired = signals.signal_middleware(self)
            if wired is not None:
                steps.append(wired)
            self._built_hooks = Hooks(steps + self.middleware)
            self._hooks_key = key
        return self._built_hooks

    @hooks.setter
    def hooks(self, _value: Hooks) -> None:
        self._hooks_key = None  # App.add_middleware: built again on next use

    def runs_eagerly(self) -> bool:
        return bool(self.conf.get("task_always_eager"))

    # -- configuration ----------------------------------------------------------------------
    def config_from_object(self, obj: Any, silent: bool = False, force: bool = False,
                           namespace: str | None = None) -> None:
        """Load settings from a module, an object, ``"module"`` or ``"module:attr"``; with
        ``namespace="CELERY"`` only ``CELERY_*`` names (Django's settings)."""
        self.conf.load_object(obj, namespace=namespace, silent=silent)

    def config_from_envvar(self, variable_name: str, silent: bool = False,
                           force: bool = False) -> None:
        try:
            module = from_envvar(variable_name)
        except ImportError:
            if silent:
                return
            raise
        self.config_from_object(module, silent=silent)

    def config_from_cmdline(self, argv: list[str], namespace: str = "celery") -> None:
        self.conf.update(dict(a.split("=", 1) for a in argv if "=" in a))

    def _conf_changed(self, name: str) -> None:
        if name == "task_routes":
            routes = self.conf.peek_get("task_routes")
            self.router = Router(routes) if routes else None
        elif name in TASK_DEFAULT_KEYS:
            for task in list(self.tasks.values()):
                if isinstance(task, CeleryTask):
                    task.reconfigure()

    def autodiscover_tasks(self, packages: Any = None, related_name: str = "tasks",
                           force: bool = False) -> None:
        """Import ``<package>.<related_name>`` for each package (default: Django's
        INSTALLED_APPS) when the worker starts (now with ``force``)."""
        self._autodiscover.append((packages, related_name))
        if force:
            self._discover()

    def _discover(self) -> None:
        pending, self._autodiscover = self._autodiscover, []
        for packages, related in pending:
            if callable(packages):
                packages = packages()
            if packages is None:
                packages = _django_apps()
            for package in packages or ():
                try:
                    importlib.import_module(f"{package}.{related}")
                except ModuleNotFoundError as exc:
                    if exc.name not in (f"{package}.{related}", package):
                        raise  # the tasks module exists and itself failed to import

    def setup_logging(self, loglevel: str = "info", logfile: str | None = None) -> None:
        """Celery's ``setup_logging`` signal first: with a receiver connected, fastq leaves the
        logging set-up to it (as Celery does); then ``after_setup_logger`` with the root logger."""
        import logging

        from fastq.compat import signals
        from fastq.compat.utils.log import TASK_LOGGER

        level = logging.getLevelName(loglevel.upper())
        named = dict(loglevel=level, logfile=logfile, format="", colorize=None)
        if signals.setup_logging.receivers:
            signals.setup_logging.send(sender=None, **named)
        else:
            super().setup_logging(loglevel, logfile)
        signals.after_setup_logger.send(sender=None, logger=logging.getLogger(), **named)
        signals.after_setup_task_logger.send(sender=None, logger=logging.getLogger(TASK_LOGGER),
                                             **named)

    def import_modules(self) -> None:
        """What a worker or beat does before it starts: ``include``/``imports``, autodiscovery,
        then ``on_after_configure`` and ``on_after_finalize``."""
        super().import_modules()
        for module in self.conf.get("imports") or ():
            importlib.import_module(module)
        self._discover()
        self.finalize()

    def configure(self) -> None:
        """Celery's configuration moment (the first read of a setting): ``on_configure`` and
        ``on_after_configure``, once."""
        if not self._configured:
            self._configured = True
            self.on_configure.send(sender=self)
            self.on_after_configure.send(sender=self, source=self.conf)

    def finalize(self, auto: bool = False) -> None:
        """Once the task modules are imported: ``on_after_finalize``, once."""
        self.configure()
        if not self._finalized:
            self._finalized = True
            self.on_after_finalize.send(sender=self)

    # -- tasks ------------------------------------------------------------------------------
    def task(self, *args: Any, **options: Any) -> Any:  # type: ignore[override]
        """``@app.task``, ``@app.task()``, ``@app.task(bind=True, base=MyTask, name=...)``."""
        if len(args) == 1 and callable(args[0]):
            return self._register(args[0], options)
        if args:
            raise TypeError("app.task takes the function, or options as keywords")

        def register(fn: Callable) -> Any:
            return self._register(fn, options)

        return register

    def _register(self, fn: Callable, options: dict[str, Any]) -> CeleryTask:
        options = dict(options)
        base = options.pop("base", None) or self.task_class
        options.pop("filter", None)
        name = options.pop("name", None) or self._default_name(fn)
        task = base(self, fn, name, **options)
        self.tasks[name] = task
        return task

    def register_task(self, task: Any, **options: Any) -> CeleryTask:
        """A class-based task (``class Add(Task): name = ...; def run(self, x, y)``)."""
        cls = task if isinstance(task, type) else type(task)
        obj = cls.__new__(cls)
        name = options.pop("name", None) or getattr(cls, "name", None) or \
            f"{cls.__module__}.{cls.__qualname__}"
        CeleryTask.__init__(obj, self, cls.run, name, bind=True, **options)
        self.tasks[name] = obj
        return obj

    def _register_shared(self, fn: Callable, options: dict[str, Any]) -> None:
        name = options.get("name") or self._default_name(fn)
        if name not in self.tasks:
            self._register(fn, options)

    def task_for(self, name: str) -> Any:
        return self.tasks.get(name) or CeleryTask(self, _unregistered, name, typing=False)

    @property
    def Task(self) -> type:  # noqa: N802 - Celery's name
        return self.task_class

    @property
    def current_task(self) -> Any:
        return _current_task()

    current_worker_task = current_task

    def GroupResult(self, id: str, results: list | None = None, **kw: Any) -> Any:  # noqa: N802,A002
        from fastq.workflows.results import GroupResult

        return GroupResult(id, results or [], app=self)

    def now(self) -> Any:
        from datetime import UTC, datetime

        return datetime.now(UTC)

    def set_current(self) -> None:
        current.set_app(self)

    def set_default(self) -> None:
        current.set_app(self)

    def start(self, argv: list[str] | None = None) -> None:
        """``app.start()`` / ``app.worker_main()``: the fastq command line with this app."""
        from fastq.cli import main

        args = list(sys.argv[1:] if argv is None else argv[1:] if argv and
                    argv[0].endswith(("celery", "fastq")) else argv)
        main(args=args, obj={"app": self}, standalone_mode=True)

    def worker_main(self, argv: list[str] | None = None) -> None:
        self.start(["worker", *(argv[1:] if argv and argv[0] == "worker" else argv or [])])


def shared_task(*args: Any, **options: Any) -> Any:
    """``@shared_task``: the task is registered on every Celery app, made before or after."""
    def register(fn: Callable) -> Any:
        _shared_tasks.append((fn, options))
        for app in _celery_apps:
            app._register_shared(fn, options)
        return _SharedTask(fn, options)

    if len(args) == 1 and callable(args[0]) and not options:
        return register(args[0])
    return register


class _SharedTask:
    """What ``@shared_task`` gives: at each use, the task of the current app (as Celery's
    proxy), registered on it first if that app was made after the decorator ran."""

    def __init__(self, fn: Callable, options: dict[str, Any]):
        self._fn = fn
        self._options = options
        self.__wrapped__ = fn
        self.__doc__ = fn.__doc__

    def _task(self) -> CeleryTask:
        app = current.app()
        if not isinstance(app, Celery):
            raise RuntimeError("a shared_task needs a fastq.compat.Celery app")
        app._register_shared(self._fn, self._options)
        return app.tasks[self._options.get("name") or app._default_name(self._fn)]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._task(), name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._task()(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<@shared_task: {self._fn.__module__}.{self._fn.__qualname__}>"


def _current_task() -> Any:
    from fastq.compat.task import _direct
    from fastq.task import current_request

    direct = _direct.get()
    if direct is not None:
        return direct[0]
    msg = current_request.get()
    if msg is None:
        return None
    return current.app().tasks.get(msg.task)


def _django_apps() -> list[str]:
    try:
        from django.conf import settings
    except ImportError:
        return []
    try:
        return list(settings.INSTALLED_APPS)
    except Exception:  # noqa: BLE001 - Django not configured
        return []


def _symbol(spec: str) -> Any:
    module, _, attr = spec.replace(":", ".").rpartition(".")
    return getattr(importlib.import_module(module), attr)
