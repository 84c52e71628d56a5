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


_CLICKHOUSE_HTTP: dict[str, object] = {}


def pytest_configure(config: pytest.Config) -> None:
    """With AIRLOCK_TEST_CLICKHOUSE_HTTP=1 (set by `make test`) and no AIRLOCK_TEST_CLICKHOUSE_URL, start
    ClickHouse's engine behind its HTTP interface (tests/clickhouse_http.py) for the session, so the
    ClickHouse suite also runs through the HTTP transport and clickhouse-connect."""
    import os
    import shutil
    import subprocess
    import tempfile

    from helpers import free_port, wait_http

    if os.environ.get("AIRLOCK_TEST_CLICKHOUSE_HTTP") != "1" or os.environ.get("AIRLOCK_TEST_CLICKHOUSE_URL"):
        return
    folder = tempfile.mkdtemp(prefix="airlock-test-ch-http-")
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, str(Path(__file__).parent / "clickhouse_http.py"), str(port), folder],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    wait_http(f"http://127.0.0.1:{port}/ping", proc=proc)
    os.environ["AIRLOCK_TEST_CLICKHOUSE_URL"] = f"http://127.0.0.1:{port}"
    _CLICKHOUSE_HTTP.update(proc=proc, folder=folder, cleanup=lambda: shutil.rmtree(folder, ignore_errors=True))


def pytest_unconfigure(config: pytest.Config) -> None:
    import subprocess

    proc = _CLICKHOUSE_HTTP.get("proc")
    if isinstance(proc, subprocess.Popen):
        proc.terminate()
        proc.wait(10)
        cleanup = _CLICKHOUSE_HTTP["cleanup"]
        if callable(cleanup):
            cleanup()
