"""``app.conf`` as Celery's: a mapping of Celery's setting names over fastq's own settings.

Every key is read and written under Celery's names (new lower-case ones, old upper-case ones, and
``CELERY_``-prefixed ones through ``config_from_object(..., namespace="CELERY")``). A key is one of:

- *mapped*: it sets a fastq setting (``task_default_queue`` -> ``default_queue``, ...);
- *kept*: the compat layer reads it (``task_routes``, ``task_always_eager``, ``task_annotations``);
- *accepted*: fastq already does what it asks, or it only concerns Celery's transport; silent,
  unless it changes meaning (``task_acks_late=False``: fastq always acks after running), which is
  said once;
- *unsupported*: any other Celery setting: named once, in one warning, and otherwise ignored.

Keys that are not Celery settings at all (a Django project's own settings) are kept silently, as
Celery does. fastq's own setting names (``lease_ms``, ``prefetch`` ...) read and write through.
"""
from __future__ import annotations

import fnmatch
import importlib
import os
import re
import warnings
from collections.abc import Iterator, MutableMapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from fastq.compat.celery_settings import OLD_NAMES, SETTING_NAMES
from fastq.config import Settings

if TYPE_CHECKING:
    from fastq.app import App


class CompatWarning(UserWarning):
    """A Celery setting or option that fastq ignores, or that means something else here."""


MIME = {"application/json": "json", "application/x-msgpack": "msgpack",
        "application/msgpack": "msgpack", "application/x-python-serialize": "pickle"}

# Celery's defaults for the keys the compat layer reads itself.
KEPT = {
    "task_routes": None, "task_annotations": None, "task_always_eager": False,
    "task_eager_propagates": False, "task_time_limit": None, "task_soft_time_limit": None,
    "task_ignore_result": False, "task_track_started": False, "task_default_rate_limit": None,
    "task_publish_retry": True, "task_publish_retry_policy": None, "imports": (),
    "enable_utc": True, "task_acks_late": False, "result_serializer": "json",
    "broker_connection_retry_on_startup": None, "broker_connection_retry": True,
    "broker_connection_max_retries": 100, "broker_transport_options": {},
    "task_store_eager_result": False, "task_remote_tracebacks": False,
    "worker_hijack_root_logger": True, "worker_redirect_stdouts": True,
    "worker_redirect_stdouts_level": "WARNING", "worker_log_color": None,
    "worker_log_format": None, "worker_task_log_format": None, "task_create_missing_queues": True,
    "task_default_exchange": None, "task_default_exchange_type": "direct",
    "task_default_routing_key": None, "task_default_delivery_mode": "persistent",
    "task_queues": None, "result_extended": False, "result_persistent": None,
    "task_reject_on_worker_lost": None, "task_acks_on_failure_or_timeout": True,
    "task_send_sent_event": False, "worker_pool": "prefork",
    "worker_disable_rate_limits": False, "broker_pool_limit": 10, "broker_heartbeat": 120,
    "broker_connection_timeout": 4, "redis_max_connections": None, "redis_socket_timeout": 120,
    "redis_socket_connect_timeout": None, "redis_retry_on_timeout": False,
    "redis_socket_keepalive": False, "redis_backend_health_check_interval": 0,
    "result_backend_transport_options": {}, "result_compression": None,
    "task_compression": None, "worker_enable_remote_control": True,
    "worker_cancel_long_running_tasks_on_connection_loss": False, "result_chord_join_timeout": 3,
    "broker_channel_error_retry": False, "task_inherit_parent_priority": False,
    "worker_deduplicate_successful_tasks": False, "beat_scheduler": None,
    "worker_lost_wait": 10, "result_accept_content": None, "task_protocol": 2,
    "broker_connection_retry_on_startup_max_retries": None, "worker_proc_alive_timeout": 4,
}
# Celery key -> fastq setting, for keys with the same meaning under another name.
MAPPED = {
    "broker_url": "broker_url", "result_backend": "result_backend",
    "result_expires": "result_expires", "timezone": "timezone", "beat_schedule": "beat_schedule",
    "accept_content": "accept_content", "task_serializer": "serializer",
    "task_default_queue": "default_queue", "task_default_priority": "default_priority",
    "worker_prefetch_multiplier": "prefetch", "worker_concurrency": "concurrency",
    "worker_max_tasks_per_child": "max_tasks_per_child",
    "worker_max_memory_per_child": "max_memory_per_child", "include": "include",
    "worker_send_task_events": "task_events",
}
# Accepted keys whose value makes fastq behave otherwise than Celery: (predicate(value, conf), note).
MEANING = {
    "task_acks_late": (lambda v, _conf: not v, "fastq always acknowledges a message after its task "
                       "ran (a crash redelivers it), as task_acks_late=True does"),
    "worker_pool": (lambda v, _conf: v not in ("prefork", "processes", None),
                    "fastq's children are processes (async def tasks run on their event loop)"),
    "result_serializer": (lambda v, conf: MIME.get(v, v) != conf._settings.serializer,
                          "results are written with the task's serializer"),
    "task_queues": (lambda v, _conf: bool(v), "fastq creates a queue when it is first sent to or "
                    "consumed; exchanges and bindings are not used (routing names queues)"),
    "task_compression": (lambda v, _conf: bool(v), "fastq compresses large bodies with lz4 itself"),
    "result_compression": (lambda v, _conf: bool(v), "fastq compresses large results with lz4 itself"),
    "enable_utc": (lambda v, _conf: not v, "fastq keeps times in UTC; timezone applies to crontab"),
    "task_protocol": (lambda v, _conf: v != 2, "fastq has one envelope of its own"),
}
TRANSPORT_OPTIONS = {"visibility_timeout", "queue_order_strategy", "priority_steps", "sep",
                     "max_retries", "interval_start", "interval_step", "interval_max",
                     "socket_timeout", "socket_connect_timeout", "socket_keepalive",
                     "health_check_interval", "retry_on_timeout", "fanout_prefix",
                     "fanout_patterns", "polling_interval", "global_keyprefix",
                     "unacked_restore_limit", "max_connections"}
_warned: set[str] = set()  # keys warned about in this process (each once)


def normalize(key: str, namespace: str | None = None) -> str | None:
    """A setting name as Celery's new lower-case name; None when ``namespace`` excludes it."""
    if namespace:
        prefix = f"{namespace}_"
        if not key.startswith(prefix):
            return None
        key = key[len(prefix):]
        return OLD_NAMES.get(key, key.lower()) if key.isupper() else key
    return OLD_NAMES.get(key, key.lower() if key.isupper() and key.lower() in SETTING_NAMES
                         else key)


def _seconds(value: Any) -> Any:
    return value.total_seconds() if isinstance(value, timedelta) else value


def _content(types: Any) -> list[str]:
    names = [MIME.get(t, t) for t in ([types] if isinstance(types, str) else list(types))]
    return [n for n in names if n in ("json", "msgpack", "pickle")]


def _native(key: str, value: Any) -> tuple[Any, str | None]:
    """A Celery value as the fastq setting's value, and a note if something is lost."""
    if key == "result_backend":
        if value is None or re.match(r"(redis|rediss|valkey|unix|memory)://", str(value)):
            return value, None
        return None, (f"fastq keeps results in Redis; result_backend={value!r} is not used "
                      "(results go to the broker's Redis)")
    if key == "result_expires":
        if value is None:
            return None, "result_expires=None (never expire): fastq keeps results 1 day by default"
        return _seconds(value), None
    if key in ("accept_content", "task_serializer"):
        kept = _content(value)
        if key == "task_serializer":
            if not kept:
                return None, f"serializer {value!r} is not supported (json, msgpack, pickle are)"
            return kept[0], None
        dropped = [v for v in ([value] if isinstance(value, str) else value)
                   if MIME.get(v, v) not in kept]
        return kept or None, (f"content types {dropped} are not supported" if dropped else None)
    if key == "task_default_priority":
        from fastq.compat.task import celery_priority

        return (celery_priority(value) if value is not None else None), None
    if key == "worker_prefetch_multiplier":
        return (int(value) if value else None), None  # 0 = Celery's "as many as it can"
    if key == "include":
        return list(value or ()), None
    return value, None


class CeleryConf(MutableMapping):
    """``app.conf`` of a Celery app: see the module docstring."""

    def __init__(self, app: App, settings: Settings):
        object.__setattr__(self, "_app", app)
        object.__setattr__(self, "_settings", settings)
        object.__setattr__(self, "_values", {})  # what was set, under Celery's names

    # -- the mapping --------------------------------------------------------------------------
    def __getitem__(self, key: str) -> Any:
        """A user's read: as in Celery, the first one configures the app (on_after_configure)."""
        if not self._app._configured:
            self._app.configure()
        return self.peek(key)

    def peek(self, key: str) -> Any:
        """Read without configuring the app (the compat layer's own reads at import time)."""
        name = normalize(key) or key
        if name in self._values:
            return self._values[name]
        if name in MAPPED:
            return getattr(self._settings, MAPPED[name])
        if name in KEPT:
            return KEPT[name]
        if name in Settings.model_fields:
            return getattr(self._settings, name)
        raise KeyError(key)

    def __setitem__(self, key: str, value: Any) -> None:
        notes = self._set(key, value)
        if notes:
            _warn(notes)

    def __delitem__(self, key: str) -> None:
        del self._values[normalize(key) or key]

    def __iter__(self) -> Iterator[str]:
        seen = dict.fromkeys([*self._values, *MAPPED, *KEPT])
        return iter(seen)

    def __len__(self) -> int:
        return len(set(self._values) | set(MAPPED) | set(KEPT))

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, str):
            return False
        name = normalize(key) or key
        return name in self._values or name in MAPPED or name in KEPT

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        if name in Settings.model_fields and name not in MAPPED:
            return getattr(self._settings, name)  # fastq's own names (the engine reads these)
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"app.conf has no setting {name!r}") from None

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value

    def __repr__(self) -> str:
        return f"<CeleryConf of {self._app!r}: {len(self._values)} set>"

    # -- Celery's methods -----------------------------------------------------------------------
    def update(self, other: Any = (), /, **kwargs: Any) -> None:  # type: ignore[override]
        """Set many keys; every unsupported one is named in a single warning."""
        items = list(other.items() if hasattr(other, "items") else other) + list(kwargs.items())
        notes: list[str] = []
        for key, value in items:
            notes += self._set(key, value)
        if notes:
            _warn(notes)

    def setdefault(self, key: str, default: Any = None) -> Any:
        name = normalize(key) or key
        if name not in self:  # a key with a default is in (as in Celery): left as it is
            self[name] = default
        return self[name]

    def get(self, key: str, default: Any = None) -> Any:
        try:
            return self[key]
        except KeyError:
            return default

    def peek_get(self, key: str, default: Any = None) -> Any:
        try:
            return self.peek(key)
        except KeyError:
            return default

    def changes(self) -> dict[str, Any]:
        return dict(self._values)

    def humanize(self, with_defaults: bool = False, censored: bool = True) -> str:
        return "\n".join(f"{k}: {v!r}" for k, v in sorted(self.table(with_defaults).items()))

    def table(self, with_defaults: bool = False, censored: bool = True) -> dict[str, Any]:
        keys = list(self) if with_defaults else list(self._values)
        out = {k: self.get(k) for k in keys}
        if censored and out.get("broker_url"):
            from fastq.broker.redis import redacted

            out["broker_url"] = redacted(str(out["broker_url"]))
        return out

    # -- loading ----------------------------------------------------------------------------
    def load_object(self, obj: Any, namespace: str | None = None, silent: bool = False) -> None:
        """Celery's ``config_from_object``: a module, an object, ``"module"`` or ``"mod:attr"``."""
        if isinstance(obj, str):
            try:
                obj = _import(obj)
            except ImportError:
                if silent:
                    return
                raise
        source = obj if isinstance(obj, dict) else {k: getattr(obj, k) for k in dir(obj)
                                                    if not k.startswith("_")}
        items = {}
        for key, value in source.items():
            name = normalize(key, namespace)
            if name is None or (not namespace and not _is_setting(name)):
                continue  # another setting of the project's (Django's own, a module import)
            items[name] = value
        self.update(items)

    # -- one key ----------------------------------------------------------------------------
    def _set(self, key: str, value: Any) -> list[str]:
        """Set one key; returns the notes to warn about (empty when it is fully supported)."""
        settings = self._settings
        if key in Settings.model_fields and key not in MAPPED and key not in SETTING_NAMES:
            setattr(settings, key, value)  # a fastq setting by its own name
            return []
        name = normalize(key) or key
        self._values[name] = value
        notes: list[str] = []
        if name in MAPPED:
            native, note = _native(name, value)
            if native is not None or name in ("result_backend",):
                setattr(settings, MAPPED[name], native)
                if isinstance(native, dict | list):  # one object: changes to it reach the engine
                    self._values[name] = getattr(settings, MAPPED[name])
            if note:
                notes.append(f"{name}: {note}")
        elif name == "broker_transport_options":
            notes += self._transport_options(value or {})
        elif name in KEPT:
            meaning = MEANING.get(name)
            if meaning and meaning[0](value, self):
                notes.append(f"{name}={value!r}: {meaning[1]}")
        elif name in SETTING_NAMES:
            notes.append(f"{name}: not supported by fastq, ignored")
        elif _looks_like_setting(name):
            notes.append(f"{name}: not a Celery setting (a typo?), ignored")
        self._app._conf_changed(name)
        return [n for n in notes if _first_time(n.partition(":")[0].partition("=")[0])]

    def _transport_options(self, options: dict) -> list[str]:
        notes = []
        if "visibility_timeout" in options:
            self._settings.lease_ms = int(float(options["visibility_timeout"]) * 1000)
        for key in options:
            if key not in TRANSPORT_OPTIONS:
                notes.append(f"broker_transport_options[{key!r}]: not supported, ignored")
            elif key in ("sep", "global_keyprefix", "fanout_prefix", "fanout_patterns"):
                notes.append(f"broker_transport_options[{key!r}]: fastq names its own Redis "
                             "keys (fastq/keys.py); ignored")
        if options.get("queue_order_strategy") not in (None, "priority"):
            notes.append(f"broker_transport_options['queue_order_strategy']="
                         f"{options['queue_order_strategy']!r}: fastq always serves priorities "
                         "(weighted fair, no level starves)")
        return notes


def _is_setting(name: str) -> bool:
    return name in SETTING_NAMES or name in MAPPED or name in KEPT


def _looks_like_setting(name: str) -> bool:
    return name.islower() and name.split("_")[0] in ("task", "worker", "broker", "result", "beat")


def _first_time(key: str) -> bool:
    if key in _warned:
        return False
    _warned.add(key)
    return True


def _warn(notes: list[str]) -> None:
    warnings.warn("fastq.compat: " + "; ".join(notes), CompatWarning, stacklevel=4)


def _import(spec: str) -> Any:
    """``"module"``, ``"module:attr"`` or ``"module.attr"`` (as Celery's ``symbol_by_name``)."""
    module_name, _, attr = spec.partition(":")
    try:
        obj = importlib.import_module(module_name)
    except ModuleNotFoundError:
        if attr or "." not in module_name:
            raise
        module_name, _, attr = module_name.rpartition(".")
        obj = importlib.import_module(module_name)
    return getattr(obj, attr) if attr else obj


def from_envvar(variable_name: str) -> str:
    module = os.environ.get(variable_name)
    if not module:
        raise ImportError(f"the environment variable {variable_name!r} is not set: it should "
                          "name the configuration module")
    return module


# -- task_annotations and task_routes -------------------------------------------------------
def annotations_for(annotations: Any, task_name: str) -> dict[str, Any]:
    """The options ``task_annotations`` gives ``task_name`` (a dict, a list of dicts, or objects
    with ``annotate(task)``); ``'*'`` applies to every task, a name's own entry wins."""
    if not annotations:
        return {}
    out: dict[str, Any] = {}
    for source in annotations if isinstance(annotations, list | tuple) else [annotations]:
        if isinstance(source, dict):
            out.update(source.get("*", {}))
            out.update(source.get(task_name, {}))
    return out


class Router:
    """``task_routes`` as fastq's router: a dict (exact names, glob patterns, compiled regexes),
    a router function ``(name, args, kwargs, options, task=None, **kw)``, or a list of those."""

    def __init__(self, routes: Any):
        items = routes if isinstance(routes, list | tuple) else [routes]
        self.routers = [r for r in (_compile(i) for i in items) if r is not None]

    def __call__(self, name: str, args: tuple, kwargs: dict) -> str | None:
        for router in self.routers:
            route = router(name, args, kwargs)
            queue = _queue_of(route)
            if queue:
                return queue
        return None


def _compile(item: Any) -> Any:
    if item is None:
        return None
    if isinstance(item, str):  # "module.router_function"
        item = _import(item)
    if isinstance(item, dict):
        exact = {k: v for k, v in item.items() if isinstance(k, str) and not _is_glob(k)}
        patterns = [(re.compile(fnmatch.translate(k)) if isinstance(k, str) else k, v)
                    for k, v in item.items() if not isinstance(k, str) or _is_glob(k)]

        def by_name(name: str, _args: tuple, _kwargs: dict) -> Any:
            if name in exact:
                return exact[name]
            for pattern, route in patterns:
                if pattern.match(name):
                    return route
            return None

        return by_name
    if callable(item):
        return lambda name, args, kwargs: item(name, args, kwargs, {}, task=None)
    if hasattr(item, "route_for_task"):  # an old-style router class
        return lambda name, args, kwargs: item.route_for_task(name, args, kwargs)
    raise TypeError(f"task_routes: cannot route with {item!r}")


def _is_glob(key: str) -> bool:
    return any(c in key for c in "*?[")


def _queue_of(route: Any) -> str | None:
    if route is None:
        return None
    if isinstance(route, str):
        return route
    if isinstance(route, tuple) and route:  # (queue, options)
        return _queue_of(route[0])
    if isinstance(route, dict):
        queue = route.get("queue")
        if queue is not None and not isinstance(queue, str):
            queue = getattr(queue, "name", None)
        return queue or route.get("routing_key")
    return getattr(route, "name", None)  # a kombu Queue
