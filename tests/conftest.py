from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from helpers import Sim

pytest_plugins = ["backends"]


@pytest.fixture(scope="session")
def sims() -> Iterator[dict[str, Sim]]:
    """Two simulated regions, shared by the tests that do not change their behaviour."""
    started = {"sim-eu": Sim("eu-west-1"), "sim-us": Sim("us-east-1")}
    yield started
    for s in started.values():
        s.stop()
