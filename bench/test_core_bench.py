"""Micro-benchmarks of the hot core: Cython vs the pure-Python twins, side by side.

    python setup.py build_ext --inplace
    pytest bench/test_core_bench.py --benchmark-only

Each benchmark is grouped by operation; the ``cython`` params are skipped when the core is not built.
"""
from __future__ import annotations

import pytest

from fastq._core import codec_py, select_py
from fastq.message import Message

try:
    from fastq._core import codec as codec_cy
    from fastq._core import select as select_cy
except ImportError:  # not built
    codec_cy = select_cy = None

_not_built = pytest.mark.skipif(codec_cy is None, reason="Cython core not built")
CODECS = [pytest.param(codec_py, id="python"), pytest.param(codec_cy, id="cython", marks=_not_built)]
SELECTS = [pytest.param(select_py, id="python"),
           pytest.param(select_cy, id="cython", marks=_not_built)]

ARGS, KWARGS = (2, 3, "hello"), {"retries": 1, "tag": "x"}
BODY, COMPRESSED = codec_py.pack_body(ARGS, KWARGS, 0, 1024)
MESSAGE = Message("5b1c6a0e-3c9d-4b8e-9f6a-2d7c1e0b4a11", "proj.tasks.add", BODY, 0, COMPRESSED, 2,
                  attempt=1, eta_ms=1_732_000_000_000, soft_limit_ms=30_000,
                  root_id="0f3e2d1c-5b4a-4938-8271-6a5b4c3d2e1f")
ENVELOPE = codec_py.encode_message(MESSAGE)


@pytest.mark.benchmark(group="encode_message")
@pytest.mark.parametrize("codec", CODECS)
def test_encode_message(benchmark, codec):
    assert benchmark(codec.encode_message, MESSAGE) == ENVELOPE


@pytest.mark.benchmark(group="decode_message")
@pytest.mark.parametrize("codec", CODECS)
def test_decode_message(benchmark, codec):
    assert benchmark(codec.decode_message, ENVELOPE) == MESSAGE


@pytest.mark.benchmark(group="pack_body+unpack_body")
@pytest.mark.parametrize("codec", CODECS)
def test_pack_unpack_body(benchmark, codec):
    pack, unpack = codec.pack_body, codec.unpack_body

    def round_trip():
        body, compressed = pack(ARGS, KWARGS, 0, 1024)
        return unpack(body, 0, compressed)

    assert benchmark(round_trip) == (ARGS, KWARGS)


@pytest.mark.benchmark(group="plan_levels(n=100)")
@pytest.mark.parametrize("select", SELECTS)
def test_plan_levels(benchmark, select):
    available, ages, credits = [40, 40, 40, 40, 40], [5, 120, 900, 4_000, 60_000], [0.0] * 5
    weights, plan = select.DEFAULT_WEIGHTS, select.plan_levels
    out = benchmark(plan, available, ages, credits, weights, 30_000.0, 100)
    assert len(out) == 100
