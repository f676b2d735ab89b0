"""A test suite written for ``celery.contrib.pytest``, as Celery's testing guide writes one. It
imports nothing of Celery or fastq: the fixtures come from the plugin. tests/test_pytest_plugin.py
runs it unchanged on fastq's plugin, and on Celery's (``-p celery.contrib.pytest``) where Celery
is installed."""
import pytest


@pytest.fixture(scope="session")
def celery_config():
    return {"broker_url": "memory://", "result_backend": "cache+memory://",
            "task_serializer": "json"}


@pytest.fixture(scope="session")
def celery_session_app(celery_session_app):
    @celery_session_app.task(name="suite.square")
    def square(x):
        return x * x

    return celery_session_app


def test_create_task(celery_app, celery_worker):
    @celery_app.task
    def mul(x, y):
        return x * y

    celery_worker.reload()
    assert mul.delay(4, 4).get(timeout=10) == 16


def test_failure_is_raised(celery_app, celery_worker):
    @celery_app.task
    def broken():
        raise ValueError("nope")

    celery_worker.reload()
    result = broken.delay()
    with pytest.raises(ValueError, match="nope"):
        result.get(timeout=10)
    assert result.state == "FAILURE"


def test_canvas_in_a_worker(celery_app, celery_worker):
    from_app = celery_app

    @from_app.task
    def add(x, y):
        return x + y

    celery_worker.reload()
    sig = add.s(1, 1) | add.s(10)
    assert sig.delay().get(timeout=10) == 12


@pytest.mark.celery(task_always_eager=True)
def test_marker_overrides_the_config(celery_app):
    @celery_app.task
    def double(x):
        return 2 * x

    assert celery_app.conf.task_always_eager is True
    assert double.delay(21).get() == 42


def test_session_worker(celery_session_app, celery_session_worker):
    square = celery_session_app.tasks["suite.square"]
    assert square.delay(7).get(timeout=10) == 49
