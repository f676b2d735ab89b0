"""The pytest plugin (fastq/compat/contrib/pytest.py): a suite written for celery.contrib.pytest
(compat/pytest_suite/) runs unchanged on fastq's fixtures, in a pytest of its own."""
from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

from tests.conftest import ROOT

SUITE = ROOT / "compat" / "pytest_suite"


def _pytest(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           str(SUITE), *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=240)


def test_a_celery_contrib_pytest_suite_runs_on_fastqs_fixtures():
    run = _pytest()
    assert run.returncode == 0, run.stdout + run.stderr
    assert "5 passed" in run.stdout


@pytest.mark.skipif(importlib.util.find_spec("celery") is None,
                    reason="Celery is not installed (pip install -e '.[bench]')")
def test_the_same_suite_passes_on_celery_itself():
    run = _pytest("-p", "no:fastq", "-p", "celery.contrib.pytest")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "5 passed" in run.stdout
