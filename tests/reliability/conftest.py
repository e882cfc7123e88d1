"""Fixtures of the reliability tests: whether the long modes run."""

from __future__ import annotations

import pytest


@pytest.fixture
def runslow(request: pytest.FixtureRequest) -> bool:
    """True under ``--runslow``: sustained-load and big-sweep tests use their long sizes."""
    return bool(request.config.getoption("--runslow"))
