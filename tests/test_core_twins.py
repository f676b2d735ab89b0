"""The Cython core (fastq._core.codec / .select / .tally / .runlog) against its pure-Python twins.

The ``_py`` modules are the reference; the compiled ones must give byte-identical output, the same
exceptions with the same messages, and identical in-place credit updates. Skipped when the Cython
modules are not built (``python setup.py build_ext --inplace``).
"""
from __future__ import annotations

import math
import os
import random
import subprocess
import sys
from collections import Counter

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastq._core import codec_py, select_py
from fastq.errors import DecodeError, EncodeError
from fastq.message import Message

codec_cy = pytest.importorskip("fastq._core.codec", reason="Cython core not built")
select_cy = pytest.importorskip("fastq._core.select", reason="Cython core not built")

CODECS = [pytest.param(codec_py, id="python"), pytest.param(codec_cy, id="cython")]
SELECTS = [pytest.param(select_py, id="python"), pytest.param(select_cy, id="cython")]
I64 = (-(2**63), 2**63 - 1)
U32 = 0xFFFFFFFF


def outcome(fn, *args, **kwargs):
    """``("ok", result)`` or ``(exception type, message)`` for our two error types only."""
    try:
        return "ok", fn(*args, **kwargs)
    except (DecodeError, EncodeError) as exc:
        return type(exc), str(exc)


def same_outcome(fn_name, mods, *args, **kwargs):
    """Run ``fn_name`` in both modules; assert equal results (by repr: NaN != NaN) or equal errors."""
    a, b = (outcome(getattr(m, fn_name), *args, **kwargs) for m in mods)
    assert a[0] == b[0]
    assert type(a[1]) is type(b[1])
    assert repr(a[1]) == repr(b[1])
    return a


def both_codecs(fn_name, *args, **kwargs):
    return same_outcome(fn_name, (codec_py, codec_cy), *args, **kwargs)


# ---- strategies ----

text = st.text(min_size=1, max_size=40)  # hypothesis' text() never yields lone surrogates
opt_text = st.none() | text
json_scalars = (st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1)
                | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20))
json_values = st.recursive(
    json_scalars,
    lambda kids: st.lists(kids, max_size=5) | st.dictionaries(st.text(max_size=8), kids, max_size=5),
    max_leaves=20,
)
options = st.dictionaries(st.text(max_size=10), json_values, max_size=5)

messages = st.builds(
    Message,
    id=text,
    task=text,
    body=st.binary(max_size=300),
    codec=st.integers(0, 2),
    compressed=st.booleans(),
    priority=st.integers(0, 4),
    attempt=st.integers(0, 0xFFFF),
    eta_ms=st.integers(*I64),
    expires_ms=st.integers(*I64),
    soft_limit_ms=st.integers(0, U32),
    hard_limit_ms=st.integers(0, U32),
    parent_id=opt_text,
    root_id=opt_text,
    group_id=opt_text,
    dag_id=opt_text,
    idem_key=opt_text,
    options=options,
)

# (field, a value outside its range or of the wrong type)
bad_fields = st.one_of(
    st.tuples(st.just("priority"), st.integers(max_value=-1) | st.integers(min_value=5)),
    st.tuples(st.just("codec"), st.integers(max_value=-1) | st.integers(min_value=3)),
    st.tuples(st.just("attempt"), st.integers(max_value=-1) | st.integers(min_value=0x10000)),
    st.tuples(st.sampled_from(["eta_ms", "expires_ms"]),
              st.integers(max_value=I64[0] - 1) | st.integers(min_value=I64[1] + 1)),
    st.tuples(st.sampled_from(["soft_limit_ms", "hard_limit_ms"]),
              st.integers(max_value=-1) | st.integers(min_value=U32 + 1)),
    st.tuples(st.sampled_from(["priority", "codec", "attempt", "eta_ms", "soft_limit_ms"]),
              st.floats() | st.none() | st.text(max_size=3)),
    st.tuples(st.sampled_from(["id", "task"]), st.just("") | st.none()),
    st.tuples(st.sampled_from(["id", "task", "parent_id", "idem_key"]),
              st.integers() | st.binary(min_size=1, max_size=3)),
    st.tuples(st.just("options"), st.lists(st.integers(), min_size=1, max_size=3)),
    st.tuples(st.just("options"), st.just({"big": 2**64}) | st.just({"s": {1, 2}})),
    st.tuples(st.just("body"), st.integers(0, 5) | st.text(max_size=3) | st.none()),
)


# ---- envelope ----

@given(messages)
def test_encode_identical_and_round_trips(msg):
    data = codec_py.encode_message(msg)
    assert codec_cy.encode_message(msg) == data
    assert codec_py.decode_message(data) == msg
    assert codec_cy.decode_message(data) == msg
    assert codec_cy.decode_message(bytearray(data)) == msg


@given(messages)
def test_every_truncation_fails_alike(msg):
    data = codec_py.encode_message(msg)
    body_start = len(data) - len(msg.body)
    for cut in range(len(data)):
        kind, _ = both_codecs("decode_message", data[:cut])
        # only a cut inside the body still parses (as a shorter body)
        assert kind == ("ok" if cut >= body_start else DecodeError)


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(
    st.binary(max_size=200),
    st.binary(max_size=200).map(lambda tail: b"\xfa\x01" + tail),
    st.tuples(messages, st.integers(0, 10**6), st.integers(0, 255)).map(
        lambda t: _mutate(codec_py.encode_message(t[0]), t[1], t[2])),
))
def test_garbage_envelopes_fail_alike(data):
    kind, value = both_codecs("decode_message", data)
    assert kind in ("ok", DecodeError)
    if kind == "ok":
        assert isinstance(value, Message)


def _mutate(data: bytes, where: int, byte: int) -> bytes:
    i = where % len(data)
    return data[:i] + bytes((byte,)) + data[i + 1:]


@given(messages, bad_fields)
def test_bad_fields_raise_same_encode_error(msg, bad):
    name, value = bad
    setattr(msg, name, value)
    kind, message = both_codecs("encode_message", msg)
    assert kind is EncodeError, message


@pytest.mark.parametrize("value", ["a" * 65535, "é" * 32767 + "a", "a" * 65536, "é" * 32768])
def test_string_length_limit(value):
    kind, _ = both_codecs("encode_message", Message("x", "t", parent_id=value))
    assert kind == ("ok" if len(value.encode()) <= 65535 else EncodeError)


@pytest.mark.parametrize("data", [None, "text", memoryview(b"\xfa\x01"), 5])
def test_decode_needs_bytes(data):
    assert both_codecs("decode_message", data)[0] is DecodeError


def test_boundaries_round_trip():
    msg = Message("i", "t", b"", 2, True, 4, 0xFFFF, I64[0], I64[1], U32, U32, options={"k": None})
    data = codec_cy.encode_message(msg)
    assert data == codec_py.encode_message(msg)
    assert codec_cy.decode_message(data) == codec_py.decode_message(data) == msg


@pytest.mark.parametrize(
    "patch", [{2: 3}, {2: 8}, {3: 5}, {0: 0xFB}, {1: 2}], ids=["codec3", "flag8", "prio5", "magic", "ver"])
def test_bad_header_bytes(patch):
    data = bytearray(codec_py.encode_message(Message("i", "t", b"body")))
    for pos, byte in patch.items():
        data[pos] = byte
    assert both_codecs("decode_message", bytes(data))[0] is DecodeError


# ---- bodies and values ----

THRESHOLDS = st.sampled_from([0, 1, 16, 1024])


@given(st.lists(json_values, max_size=5), st.dictionaries(st.text(max_size=8), json_values, max_size=5),
       st.integers(0, 2), THRESHOLDS)
def test_pack_body_identical_and_round_trips(args, kwargs, codec, threshold):
    packed = codec_py.pack_body(args, kwargs, codec, threshold)
    assert codec_cy.pack_body(args, kwargs, codec, threshold) == packed
    body, compressed = packed
    for mod in (codec_py, codec_cy):
        assert mod.unpack_body(body, codec, compressed, accept_pickle=True) == (tuple(args), kwargs)
    assert both_codecs("unpack_body", body, codec, compressed, False)[0] == (
        DecodeError if codec == 2 else "ok")


@given(json_values, st.integers(0, 2), THRESHOLDS)
def test_pack_value_identical_and_round_trips(value, codec, threshold):
    data = codec_py.pack_value(value, codec, threshold)
    assert codec_cy.pack_value(value, codec, threshold) == data
    for mod in (codec_py, codec_cy):
        assert mod.unpack_value(data, accept_pickle=True) == value
    assert both_codecs("unpack_value", data)[0] == (DecodeError if codec == 2 else "ok")
    assert both_codecs("unpack_value", bytearray(data), True) == ("ok", value)


@pytest.mark.parametrize("codec", [0, 1, 2])
@pytest.mark.parametrize("payload", [
    "x" * 1_000_000,
    "é✓ unicode 🚀 " * 70_000,
    random.Random(7).randbytes(1_000_000),  # incompressible: stays uncompressed
], ids=["ascii", "unicode", "random"])
def test_one_megabyte_payloads(codec, payload):
    if codec == 1 and isinstance(payload, bytes):
        assert both_codecs("pack_body", [payload], {}, codec, 1024)[0] is EncodeError
        return
    args, kwargs = [payload, {"nested": [1, 2.5, None, True, {"k": "v"}]}], {"big": payload}
    body, compressed = codec_py.pack_body(args, kwargs, codec, 1024)
    assert codec_cy.pack_body(args, kwargs, codec, 1024) == (body, compressed)
    assert compressed is not isinstance(payload, bytes)
    for mod in (codec_py, codec_cy):
        assert mod.unpack_body(body, codec, compressed, True) == (tuple(args), kwargs)
    value = codec_py.pack_value(args, codec, 1024)
    assert codec_cy.pack_value(args, codec, 1024) == value
    assert bool(value[0] & 4) is compressed
    for mod in (codec_py, codec_cy):
        assert mod.unpack_value(value, accept_pickle=True) == args
    # never compressed with threshold 0
    assert codec_cy.pack_body(args, kwargs, codec, 0) == codec_py.pack_body(args, kwargs, codec, 0)
    assert codec_cy.pack_body(args, kwargs, codec, 0)[1] is False


@pytest.mark.parametrize("mod", CODECS)
def test_pickle_refused_unless_accepted(mod):
    body, compressed = mod.pack_body((1, "a"), {"k": {1, 2}}, 2, 0)
    with pytest.raises(DecodeError, match="pickle content refused"):
        mod.unpack_body(body, 2, compressed)
    assert mod.unpack_body(body, 2, compressed, accept_pickle=True) == ((1, "a"), {"k": {1, 2}})
    value = mod.pack_value({1, 2}, 2, 0)
    with pytest.raises(DecodeError, match="pickle content refused"):
        mod.unpack_value(value)
    assert mod.unpack_value(value, accept_pickle=True) == {1, 2}


@pytest.mark.parametrize("value", [{1, 2}, b"raw", object, 2**70, float("nan"), {(1, 2): 3}, {1: 2}])
@pytest.mark.parametrize("codec", [0, 1, 2, 3, -1])
def test_unencodable_values_fail_alike(value, codec):
    both_codecs("pack_value", value, codec, 0)
    both_codecs("pack_body", [value], {"k": value}, codec, 0)


@pytest.mark.parametrize("args, kwargs", [((1, 2), [("a", 1)]), ("ab", {"x": "y"}), (range(3), {})])
def test_body_args_accept_any_iterables(args, kwargs):
    # list(args) and dict(kwargs), as in the twin
    assert codec_cy.pack_body(args, kwargs, 0, 0) == codec_py.pack_body(args, kwargs, 0, 0)


@pytest.mark.parametrize("mod", CODECS)
def test_body_args_must_be_iterable(mod):
    with pytest.raises(TypeError):
        mod.pack_body(5, {}, 0, 0)


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=64), st.integers(0, 3), st.booleans())
def test_garbage_bodies_fail_alike(data, codec, compressed):
    kind, _ = both_codecs("unpack_body", data, codec, compressed, False)
    assert kind in ("ok", DecodeError)


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=64))
def test_garbage_values_fail_alike(data):
    kind, _ = both_codecs("unpack_value", data, False)
    assert kind in ("ok", DecodeError)
    assert both_codecs("unpack_value", bytearray(data), False)[0] == kind


def test_signatures_match():
    import inspect

    def shape(fn):
        return [(p.name, p.kind, p.default) for p in inspect.signature(fn).parameters.values()]

    for name in ("encode_message", "decode_message", "pack_body", "unpack_body", "pack_value",
                 "unpack_value"):
        assert shape(getattr(codec_cy, name)) == shape(getattr(codec_py, name)), name
    assert shape(select_cy.plan_levels) == shape(select_py.plan_levels)
    assert select_cy.LEVELS == select_py.LEVELS
    assert select_cy.DEFAULT_WEIGHTS == select_py.DEFAULT_WEIGHTS
    for const in ("MAGIC", "VERSION", "FIXED_SIZE", "FLAG_COMPRESSED", "MAX_PRIORITY"):
        assert getattr(codec_cy, const) == getattr(codec_py, const)


# ---- plan_levels ----

def _credit_state(credits):
    return [(type(c), repr(c)) for c in credits]


def _same_plans(calls, start):
    """Run the same call sequence through both twins, each with its own credits list."""
    cred_py, cred_cy = list(start), list(start)
    for available, ages, weights, ageing, n in calls:
        out_py = select_py.plan_levels(available, ages, cred_py, weights, ageing, n)
        out_cy = select_cy.plan_levels(available, ages, cred_cy, weights, ageing, n)
        assert out_cy == out_py
        assert type(out_cy) is list
        assert _credit_state(cred_cy) == _credit_state(cred_py)
        assert len(out_py) == max(0, min(n, sum(max(0, int(a)) for a in available[:5])))


five = lambda s: st.lists(s, min_size=5, max_size=5)  # noqa: E731
plan_calls = st.tuples(
    five(st.integers(-2, 40)),
    five(st.integers(0, 10**7) | st.floats(0, 1e9)),
    st.just(select_py.DEFAULT_WEIGHTS) | five(st.integers(0, 50) | st.floats(0, 100)),
    st.sampled_from([0, -1, 1000]) | st.floats(1e-3, 1e7) | st.integers(1, 10**6),
    st.integers(-1, 250),
)


@given(st.lists(plan_calls, min_size=1, max_size=8),
       st.just([0.0] * 5) | st.just([0] * 5) | five(st.floats(-1e6, 1e6)))
def test_plan_levels_identical(calls, start):
    _same_plans(calls, start)


@given(st.lists(st.tuples(five(st.integers(0, 5)), five(st.floats()), five(st.floats()),
                          st.floats(), st.integers(0, 40)), min_size=1, max_size=5))
def test_plan_levels_identical_with_wild_floats(calls):
    # NaN, infinities, negative weights: the same operations in the same order still agree
    _same_plans(calls, [0.0] * 5)


def test_plan_levels_odd_input_types():
    calls = [((3.9, "2", True, 0, 10**30), ("5", 1, 2.5, 0, 7), ("1", 2, 3, 4, 5), "250.5", 7),
             ((1, 1, 1, 1, 1, 99), (0,) * 5, (1,) * 5, 0, 10**30)]
    _same_plans(calls, (0,) * 5)
    for mod in (select_py, select_cy):
        with pytest.raises(IndexError):
            mod.plan_levels([1, 1], [0] * 5, [0.0] * 5, select_py.DEFAULT_WEIGHTS, 0, 3)
        with pytest.raises(TypeError):
            mod.plan_levels([1] * 5, [0] * 5, [0.0] * 5, select_py.DEFAULT_WEIGHTS, 0, 2.5)


@pytest.mark.parametrize("mod", SELECTS)
def test_critical_flood_does_not_starve_batch(mod):
    credits = [0.0] * 5
    plan = mod.plan_levels([10**6] * 5, [0] * 5, credits, mod.DEFAULT_WEIGHTS, 0, 3100)
    counts = Counter(plan)
    assert [counts[i] for i in range(5)] == [1600, 800, 400, 200, 100]  # exactly 16:8:4:2:1
    # the same one pick at a time: the credits carry the round robin between calls
    credits = [0.0] * 5
    picks = [mod.plan_levels([10**6] * 5, [0] * 5, credits, mod.DEFAULT_WEIGHTS, 0, 1)[0]
             for _ in range(3100)]
    assert Counter(picks)[4] == 100
    # batch is interleaved, not left to the end: one pick in every 31
    assert all(4 in picks[i:i + 31] for i in range(0, 3100, 31))


@pytest.mark.parametrize("mod", SELECTS)
def test_ageing_grows_batch_share(mod):
    shares = []
    for age in (0, 1000, 10_000, 100_000):
        plan = mod.plan_levels([10**6] * 5, [0, 0, 0, 0, age], [0.0] * 5, mod.DEFAULT_WEIGHTS,
                               1000, 3000)
        shares.append(plan.count(4) / len(plan))
    assert shares == sorted(shares) and shares[0] < shares[-1]
    for age, share in zip((0, 1000, 10_000, 100_000), shares, strict=True):
        weight = 1 + age / 1000
        assert math.isclose(share, weight / (30 + weight), abs_tol=0.01)


@pytest.mark.parametrize("mod", SELECTS)
def test_plan_levels_details(mod):
    credits = [5.0, 5.0, 5.0, 5.0, 5.0]
    # nothing ready at 1 and 3: their credit resets; ties go to the lower level
    assert mod.plan_levels([1, 0, 1, 0, 1], [0] * 5, credits, [1, 1, 1, 1, 1], 0, 10) == [0, 2, 4]
    assert credits == [0.0] * 5
    assert mod.plan_levels([0] * 5, [0] * 5, credits, mod.DEFAULT_WEIGHTS, 0, 10) == []
    assert mod.plan_levels([9] * 5, [0] * 5, credits, mod.DEFAULT_WEIGHTS, 0, 0) == []


def test_implementation_switch():
    code = "import fastq._core as c; print(c.IMPLEMENTATION)"
    env = {k: v for k, v in os.environ.items() if k != "FASTQ_PURE"}
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    run = lambda extra: subprocess.run([sys.executable, "-c", code], env={**env, **extra},  # noqa: E731
                                       cwd=root, capture_output=True, text=True, check=True).stdout
    assert run({}).strip() == "cython"
    assert run({"FASTQ_PURE": "1"}).strip() == "python"


# -- RunTally (the metrics' counting, as runs end) ---------------------------------------------
tally_cy = pytest.importorskip("fastq._core.tally", reason="Cython core not built")
RUN_BOUNDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, math.inf)
WAIT_BOUNDS = (0.001, 0.01, 0.1, 1.0, 10.0, 100.0, math.inf)
runs_strategy = st.lists(st.tuples(
    st.sampled_from(["a", "b", "c"]), st.sampled_from(["q1", "q2"]),
    st.one_of(st.just(0.0), st.floats(1.0, 1e5)), st.floats(0.0, 20.0),
    st.one_of(st.none(), st.integers(0, 2**41).map(lambda ms: f"{ms}-{ms % 7}".encode())),
    st.one_of(st.just(0.0), st.floats(0.5, 1e5))),
    max_size=60)


class _Task:
    def __init__(self, is_async=False):
        self.is_async = is_async


def both_tallies(**kwargs):
    from fastq._core import tally_py

    return (tally_cy.RunTally(RUN_BOUNDS, WAIT_BOUNDS, **kwargs),
            tally_py.RunTally(RUN_BOUNDS, WAIT_BOUNDS, **kwargs))


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(runs_strategy, min_size=1, max_size=3), st.floats(-1e6, 2e9))
def test_run_tally_identical(rounds, offset):
    tallies = both_tallies()
    for raw in rounds:  # a tally is used again after each take
        for tally in tallies:
            tally.offset = offset
            for name, queue, started, took, entry, read_at in raw:
                tally.add(name, queue, started, started + took, entry, read_at)
            assert len(tally) == len(raw)
        cy_stats, py_stats = (tally.take() for tally in tallies)
        assert cy_stats == py_stats  # the same floats: the same sums in the same order
        assert sum(s[0] for s in py_stats.values()) == len(raw)
        timed = sum(1 for r in raw if r[2])
        assert sum(sum(s[2]) for s in py_stats.values()) == timed  # each in one run bucket
        waited = sum(1 for r in raw if r[2] and r[4])
        assert sum(sum(s[4]) for s in py_stats.values()) == waited
        for (name, queue), s in py_stats.items():  # the last timed run's, read to start
            last = [r for r in raw if r[:2] == (name, queue) and r[2] and r[5]]
            assert s[7] == (max(last[-1][2] - last[-1][5], 0.0) if last else None)
        assert all(len(tally) == 0 for tally in tallies)


def test_run_tally_buckets_and_sums():
    for tally in both_tallies():
        tally.offset = 1000.0
        # ran 0.02 s, waited 0.5 s (0.52 s in all), read 0.25 s before it started
        tally.add("t", "q", 5.0, 5.02, b"1004500-0", 4.75)
        tally.add("t", "q", 0.0, 0.0, None)  # counted, not timed
        [(key, st)] = tally.take().items()
        assert key == ("t", "q") and st[0] == 2 and st[7] == 0.25
        assert math.isclose(st[1], 0.02) and st[2][RUN_BOUNDS.index(0.025)] == 1
        assert math.isclose(st[3], 0.5) and st[4][WAIT_BOUNDS.index(1.0)] == 1
        assert math.isclose(st[5], 0.52) and st[6][WAIT_BOUNDS.index(1.0)] == 1
        assert tally.take() == {}


class _TallyChild:
    task_started = 100.0
    current_entry = None
    batch_read_at = 99.5


def test_run_tally_hook_counts_a_sync_success_and_hands_other_runs_on():
    import time

    from fastq.message import Message

    exc = KeyError("k")
    for tally in both_tallies(child=_TallyChild()):
        seen = []
        tally.other = lambda *a, seen=seen: seen.append(a)
        message = Message(id="1", task="t", queue="q")
        _TallyChild.task_started = time.monotonic() - 0.03
        tally.after_execute(_Task(), message, 1, None)
        tally.after_execute(_Task(), message, None, exc)
        tally.after_execute(_Task(is_async=True), message, 2, None)
        [(key, st)] = tally.take().items()
        assert key == ("t", "q") and st[0] == 2 and 0.06 <= st[1] < 10  # both timed by their end
        assert [a[3] for a in seen] == [exc] and st[7] is None  # prefetch not asked for
    for tally in both_tallies(child=_TallyChild(), prefetch=True):
        _TallyChild.task_started, _TallyChild.batch_read_at = 100.0, 99.5
        tally.after_execute(_Task(), Message(id="2", task="t", queue="q"), 1, None)
        assert tally.take()[("t", "q")][7] == 0.5


# -- RunLog (the events' runs, packed as they end) -------------------------------------------
runlog_cy = pytest.importorskip("fastq._core.runlog", reason="Cython core not built")
run_values = st.one_of(
    st.none(), st.booleans(), st.floats(allow_nan=False), st.integers(-2**63, 2**64 - 1),
    st.binary(max_size=300), st.text(max_size=300),
    st.sampled_from([b"x" * 70_000, "é" * 40_000, "y" * 255, "z" * 31, "w" * 32, b"v" * 255,
                     b"u" * 256, ("a", [1, "b"]), 1.5e300, -0.0]),
    st.lists(st.text(max_size=20), max_size=3))
run_strategy = st.tuples(run_values, run_values, run_values, run_values, run_values, run_values)


def both_logs(**kwargs):
    from fastq._core import runlog_py

    return runlog_cy.RunLog(**kwargs), runlog_py.RunLog(**kwargs)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.lists(run_strategy, max_size=40), min_size=1, max_size=3))
def test_run_log_takes_what_msgpack_packs(rounds):
    logs = both_logs()
    for runs in rounds:  # a log is used again after each take
        for log in logs:
            for run in runs:
                log.add(*run)
            assert len(log) == len(runs)
        packed = [log.take() for log in logs]
        assert packed[0] == packed[1] == msgpack.packb(runs, default=repr)
        assert all(len(log) == 0 for log in logs)


@pytest.mark.parametrize("count", [0, 15, 16, 65_535, 65_536])
def test_run_log_identical_across_array_header_sizes(count):
    cy, py = both_logs()
    for log in (cy, py):
        for _ in range(count):
            log.add(b"e", "q", "task-succeeded", 1.0, 2.0, "None")
    assert cy.take() == py.take() == msgpack.packb([(b"e", "q", "task-succeeded", 1.0, 2.0,
                                                     "None")] * count)


def test_run_log_refuses_what_msgpack_refuses_and_keeps_the_runs_before():
    for log in both_logs():
        log.add(b"e", "q", "task-succeeded", 1.0, 2.0, "None")
        with pytest.raises(UnicodeEncodeError):
            log.add(b"e", "q", None, 1.0, 2.0, "\ud800")  # a lone surrogate cannot be UTF-8
        assert len(log) == 1
        assert msgpack.unpackb(log.take()) == [[b"e", "q", "task-succeeded", 1.0, 2.0, "None"]]


class _Message:
    queue = "q1"


class _Child:
    current_data = b"envelope as read"
    task_started = 12.5


@pytest.mark.parametrize("result", [None, 42, "x" * 2000, {"a": [1, 2]}])
def test_run_log_hook_packs_a_sync_success(result):
    import time

    for log in both_logs(child=_Child(), repr_max=1024):
        before = time.monotonic()
        log.after_execute(_Task(), _Message(), result, None)
        after = time.monotonic()
        [[envelope, queue, outcome, started, ended, info]] = msgpack.unpackb(log.take())
        text = repr(result)
        assert (envelope, queue, outcome, started) == (b"envelope as read", "q1",
                                                       "task-succeeded", 12.5)
        assert before <= ended <= after  # the end is time.monotonic()'s clock
        assert info == (text if len(text) <= 1024 else text[:1021] + "...")
        assert len(info) <= 1024


def test_run_log_hook_hands_other_runs_on():
    exc = ValueError("no")
    for log in both_logs(child=_Child()):
        seen = []
        log.other = lambda *a, seen=seen: seen.append(a)
        task, async_task, message = _Task(), _Task(is_async=True), _Message()
        log.after_execute(task, message, None, exc)  # a failure
        assert seen == [(task, message, None, exc)] and len(log) == 0
        log.after_execute(async_task, message, 1, None)  # a success, async as well (the child
        assert len(seen) == 1 and len(log) == 1  # sets its envelope and start as it ends)
        log.child = None  # outside a worker: every run is handed on
        log.after_execute(task, message, 1, None)
        assert len(seen) == 2 and len(log) == 1
