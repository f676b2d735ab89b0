"""The fixtures of ``celery.contrib.pytest``, on fastq: a project's Celery test suite runs unchanged.

Registered as a pytest plugin (entry point ``fastq``). ``celery_app`` is a fresh
``fastq.compat.Celery`` on its own ``memory://`` broker (unless ``celery_config`` names a
``broker_url``), configured by ``celery_config`` and ``celery_parameters`` and by a test's
``@pytest.mark.celery(**settings)``; ``celery_worker`` runs a worker for it in a thread while the
test runs (``fastq.testing.worker_thread``). The ``celery_session_*`` fixtures do the same once
per session. ``worker.reload()`` exists and does nothing: the worker sees tasks registered after
it started.
"""
from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import pytest

NO_WORKER = False  # Celery's switch for suites that must not start workers


class TestWorker:
    """What ``celery_worker`` yields: the worker child running in a thread."""

    __test__ = False  # not a test class

    def __init__(self, app: Any, child: Any):
        self.app = app
        self.child = child
        self.hostname = child.consumer

    def reload(self) -> None:
        """Celery's ``TestWorkController.reload``: the worker shares the app's task registry."""

    def stop(self) -> None:
        self.child.stop()


def _make_app(config: Mapping[str, Any], parameters: Mapping[str, Any],
              includes: Sequence[str], marker: Any = None) -> Any:
    from fastq.compat import Celery

    settings = {"broker_url": f"memory://{uuid.uuid4().hex}", **dict(config)}
    if marker is not None:
        settings.update(marker.kwargs)
    app = Celery(parameters.get("main", "celery.tests"), set_as_current=True,
                 **{k: v for k, v in parameters.items() if k not in ("main", "set_as_current")})
    app.conf.update(settings)
    for module in includes:
        __import__(module)
    return app


@contextmanager
def _worker(app: Any, parameters: Mapping[str, Any]) -> Iterator[TestWorker]:
    from fastq.testing import worker_thread

    queues = parameters.get("queues")
    with worker_thread(app, queues) as child:
        yield TestWorker(app, child)


def pytest_configure(config: Any) -> None:
    config.addinivalue_line("markers", "celery(**overrides): override the test app's settings")


@pytest.fixture(scope="session")
def celery_config() -> Mapping[str, Any]:
    """Redefine to configure the test app (Celery's setting names)."""
    return {}


@pytest.fixture(scope="session")
def celery_parameters() -> Mapping[str, Any]:
    """Redefine to pass arguments to the test app's constructor."""
    return {}


@pytest.fixture(scope="session")
def celery_worker_parameters() -> Mapping[str, Any]:
    """Redefine to pass options to the test worker (``queues``)."""
    return {}


@pytest.fixture(scope="session")
def celery_includes() -> Sequence[str]:
    """Redefine to import task modules when the test app is made."""
    return ()


@pytest.fixture(scope="session")
def celery_worker_pool() -> str:
    """Accepted for Celery's sake: the test worker is one fastq child in a thread."""
    return "solo"


@pytest.fixture(scope="session")
def celery_enable_logging() -> bool:
    return False


@pytest.fixture(scope="session")
def use_celery_app_trap() -> bool:
    """Accepted for Celery's sake (fastq has no app trap)."""
    return False


@pytest.fixture(scope="session")
def celery_class_tasks() -> Sequence[Any]:
    """Redefine to register class-based tasks with the test app."""
    return ()


@pytest.fixture(scope="session")
def celery_session_app(request: Any, celery_config: Mapping[str, Any],
                       celery_parameters: Mapping[str, Any], celery_includes: Sequence[str],
                       celery_class_tasks: Sequence[Any], use_celery_app_trap: bool) -> Any:
    app = _make_app(celery_config, celery_parameters, celery_includes)
    for task in celery_class_tasks:
        app.register_task(task)
    yield app
    app.close()


@pytest.fixture(scope="session")
def celery_session_worker(request: Any, celery_session_app: Any, celery_includes: Sequence[str],
                          celery_class_tasks: Sequence[Any], celery_worker_pool: str,
                          celery_worker_parameters: Mapping[str, Any]) -> Any:
    with _worker(celery_session_app, celery_worker_parameters) as worker:
        yield worker


@pytest.fixture()
def celery_app(request: Any, celery_config: Mapping[str, Any],
               celery_parameters: Mapping[str, Any], celery_enable_logging: bool,
               use_celery_app_trap: bool) -> Any:
    app = _make_app(celery_config, celery_parameters, (),
                    request.node.get_closest_marker("celery"))
    yield app
    app.close()


@pytest.fixture()
def celery_worker(request: Any, celery_app: Any, celery_includes: Sequence[str],
                  celery_worker_pool: str, celery_worker_parameters: Mapping[str, Any]) -> Any:
    with _worker(celery_app, celery_worker_parameters) as worker:
        yield worker


@pytest.fixture()
def depends_on_current_app(celery_app: Any) -> None:
    """Make the test app the current one."""
    celery_app.set_current()
