"""The compatibility kit (compat/): every Celery example project, unmodified but for its imports,
gives on fastq the outcomes recorded from real Celery (compat/expected/). Real workers, real Redis.

The Celery side is run by ``python3 compat/run.py --impl both`` (it needs Celery installed:
``pip install -e '.[bench]'``); this test runs the fastq side against the recording.
"""
from __future__ import annotations

import sys

import pytest

from tests.conftest import ROOT

sys.path.insert(0, str(ROOT))
from compat.run import all_projects, run_projects  # noqa: E402

NAMES = [p.name for p in all_projects()]


@pytest.fixture(scope="module")
def outcomes() -> dict:
    return {r.project: r for r in run_projects("fastq")}


def test_the_kit_has_at_least_twelve_projects():
    assert len(NAMES) >= 12


@pytest.mark.parametrize("name", NAMES)
def test_project_gives_celerys_outcomes_on_fastq(outcomes, name):
    result = outcomes[name]
    assert result.ok, result.report()
