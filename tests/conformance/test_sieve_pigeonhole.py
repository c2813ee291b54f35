"""postroom's Sieve engine against Pigeonhole, the reference implementation: every case of
tests/conformance/sieve_cases.py runs through `sieve-test` and through our engine, and the
normalised action lists must be identical (compile errors and runtime errors included)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from .sieve_cases import CASES, Case
from .sieve_pigeonhole import SIEVE_TEST, comparable, ours, pigeonhole

pytestmark = pytest.mark.skipif(
    not os.access(SIEVE_TEST, os.X_OK) or shutil.which("sieve-test") is None,
    reason="sieve-test (Debian dovecot-sieve, Pigeonhole) is not installed",
)


def _param(case: Case) -> object:
    marks = [pytest.mark.xfail(reason=case.xfail, strict=True)] if case.xfail else []
    return pytest.param(case, id=case.id, marks=marks)


@pytest.mark.parametrize("case", [_param(c) for c in CASES])
def test_same_actions_as_pigeonhole(case: Case) -> None:
    # Not pytest's tmp_path: sieve-test runs as nobody, who must reach the directory, and
    # pytest's base directory is private to root.
    with tempfile.TemporaryDirectory(prefix="postroom-sieve-", dir="/tmp") as root:
        theirs = pigeonhole(case, Path(root))
    assert not any(item.startswith("unknown ") for item in theirs), theirs
    assert comparable(ours(case), theirs) == theirs


def test_corpus_is_large_enough() -> None:
    assert len(CASES) >= 150
    assert len({case.id for case in CASES}) == len(CASES)
