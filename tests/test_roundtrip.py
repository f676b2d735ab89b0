"""Values, errors and result handles through a real worker and a real Redis."""
from __future__ import annotations

import pytest

from fastq import keys, states
from fastq.errors import TaskError
from fastq.errors import TimeoutError as FastqTimeout

JSON_VALUES = [
    None, True, False, 0, -1, 2**53, 3.5, -0.25, "", "plain", "ünïcödé ✓ 漢字 🚀",
    [], [1, "two", 3.0, None], {}, {"nested": {"list": [1, {"deep": ["x"]}], "n": None}},
]


@pytest.fixture
def worker(start_worker):
    return start_worker(concurrency=2)


@pytest.mark.parametrize("value", JSON_VALUES, ids=repr)
def test_every_json_type_round_trips_msgpack_and_json(app, worker, value):
    from tests.apps.basic import echo, echo_json

    assert echo.delay(value).get(timeout=10) == value
    assert echo_json.delay(value).get(timeout=10) == value


def test_megabyte_payload_round_trips(app, worker):
    from tests.apps.basic import echo, echo_json

    big = "x" * 1_000_000 + "ü"
    blob = bytes(range(256)) * 4096
    assert echo.delay(big).get(timeout=20) == big
    assert echo_json.delay(big).get(timeout=20) == big
    assert echo.delay(blob).get(timeout=20) == blob


@pytest.mark.parametrize("kind, exc_type", [("ValueError", ValueError), ("KeyError", KeyError),
                                            ("ZeroDivisionError", ZeroDivisionError)])
def test_builtin_exceptions_propagate_with_their_type(app, worker, kind, exc_type):
    from tests.apps.basic import fail

    result = fail.delay(kind, "went wrong")
    with pytest.raises(exc_type) as info:
        result.get(timeout=10)
    assert "went wrong" in str(info.value)
    assert result.state == states.FAILURE and result.failed() and result.ready()
    assert not result.successful()
    assert "went wrong" in result.traceback and "tests/apps/basic.py" in result.traceback


def test_a_projects_own_exceptions_come_back_as_themselves(app, worker):
    from tests.apps.basic import CustomError, fail

    with pytest.raises(CustomError, match="custom!") as info:  # its module is imported here
        fail.delay("CustomError", "custom!").get(timeout=10)
    assert any("CustomError" in note for note in info.value.__notes__)


def test_exceptions_of_modules_not_imported_here_come_back_as_task_error():
    from fastq.result import rebuild_exception

    exc = rebuild_exception("nowhere_imported.errors.Broken", ["x"], "it broke", "Traceback...")
    assert isinstance(exc, TaskError) and exc.remote_type == "nowhere_imported.errors.Broken"
    assert exc.remote_message == "it broke" and exc.remote_traceback == "Traceback..."
    assert isinstance(rebuild_exception("os.getcwd", [], "m", None), TaskError)  # not a class


def test_get_without_propagate_returns_the_exception(app, worker):
    from tests.apps.basic import fail

    result = fail.delay("RuntimeError", "quiet")
    exc = result.get(timeout=10, propagate=False)
    assert isinstance(exc, RuntimeError) and str(exc) == "quiet"
    assert isinstance(result.result, RuntimeError)


def test_success_state_and_result(app, worker, r):
    from tests.apps.basic import add

    result = add.delay(2, 40)
    assert result.get(timeout=10) == 42
    assert result.state == states.SUCCESS and result.successful() and result.ready()
    assert result.result == 42 and result.traceback is None and result.date_done is not None
    ttl = r.pttl(keys.result(result.id))
    assert 0 < ttl <= app.conf.result_expires * 1000


def test_pending_state_and_get_timeout(app, r):
    from tests.apps.basic import add

    result = add.delay(1, 1)  # no worker
    assert result.state == states.PENDING and not result.ready()
    with pytest.raises(FastqTimeout):
        result.get(timeout=0.2)


def test_many_waiters_on_one_result_all_wake(app, worker):
    import threading

    from tests.apps.basic import slow_record

    result = slow_record.delay(1, 0.3)
    seen = []

    def wait():
        seen.append(app.AsyncResult(result.id).get(timeout=10))

    threads = [threading.Thread(target=wait) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen == [1] * 5


def test_result_not_encodable_is_a_failure(app, worker):
    from fastq.errors import EncodeError
    from tests.apps.basic import not_json_serializable

    with pytest.raises(EncodeError):
        not_json_serializable.delay().get(timeout=10)


def test_async_task_runs_on_the_child_event_loop(app, worker):
    from tests.apps.basic import async_add

    results = [async_add.delay(i, i) for i in range(50)]
    assert [r.get(timeout=10) for r in results] == [2 * i for i in range(50)]


def test_bound_task_sees_its_request(app, worker):
    from tests.apps.basic import whoami

    result = whoami.delay()
    assert result.get(timeout=10) == ["tests.apps.basic.whoami", result.id]


def test_calling_a_task_runs_it_locally(app, r):
    from tests.apps.basic import add

    assert add(2, 3) == 5
    assert r.keys(keys.queue_pattern("default")) == []  # nothing was sent


def test_map_and_batch_send_in_one_go(app, worker):
    from tests.apps.basic import add, echo

    mapped = echo.map(range(500))
    with app.batch():
        batched = [add.delay(i, 1) for i in range(500)]
        assert batched[0].state == states.PENDING  # not sent until the block ends
    assert [x.get(timeout=20) for x in mapped] == list(range(500))
    assert [x.get(timeout=20) for x in batched] == [i + 1 for i in range(500)]


def test_batch_that_raises_sends_nothing(app, r):
    from tests.apps.basic import add

    with pytest.raises(RuntimeError):
        with app.batch():
            add.delay(1, 2)
            raise RuntimeError("abort")
    assert r.xlen(keys.stream("default", 2)) == 0


def test_unknown_priority_is_a_clear_error(app):
    from tests.apps.basic import add

    with pytest.raises(ValueError, match="unknown priority"):
        add.apply_async((1, 2), priority="urgent")
    with pytest.raises(ValueError, match="unknown priority"):
        add.apply_async((1, 2), priority=7)
