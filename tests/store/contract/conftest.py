"""The contract suite's backends: each fixture here is one concern's repository opener, parametrized over
`backend` ("embedded": the data directory's SQLite state under tmp_path; "postgres": a fresh database from
`postgres_dsn`). An opener returns a new repository on the same state each time it is called (two calls:
two gateway processes racing), and closes them all after the test. One fixture per concern."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from airlock.store.embedded.layout import DataDir

BACKENDS = ("embedded", "postgres")

R = TypeVar("R")


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def postgres_state(backend: str, request: pytest.FixtureRequest) -> Any:
    """The migrated PostgreSQL state of the test's own database (None on the embedded backend)."""
    if backend != "postgres":
        return None
    from airlock.store.postgres import PostgresState

    return PostgresState(request.getfixturevalue("postgres_dsn"))


@pytest.fixture
def data_dir(tmp_path: Path) -> DataDir:
    data = DataDir.at(tmp_path / "data")
    data.create()
    return data


def _opener(make: Callable[[], R], close: Callable[[R], None]) -> Iterator[Callable[[], R]]:
    opened: list[R] = []

    def open_one() -> R:
        repo = make()
        opened.append(repo)
        return repo

    yield open_one
    for repo in opened:
        close(repo)


@pytest.fixture
def open_ledger_items(backend: str, postgres_state: Any, data_dir: DataDir) -> Iterator[Callable[[], Any]]:
    from airlock.store.embedded.ledger import SQLiteLedgerItems

    make = postgres_state.ledger_items if backend == "postgres" else lambda: SQLiteLedgerItems(data_dir.state_db)
    yield from _opener(make, lambda r: r.close())


@pytest.fixture
def open_energy_readings(backend: str, postgres_state: Any, data_dir: DataDir) -> Iterator[Callable[[], Any]]:
    from airlock.store.embedded.energy import SQLiteEnergyReadings

    make = postgres_state.energy_readings if backend == "postgres" else lambda: SQLiteEnergyReadings(data_dir.state_db)
    yield from _opener(make, lambda r: r.close())


@pytest.fixture
def open_replay_runs(backend: str, postgres_state: Any, data_dir: DataDir) -> Iterator[Callable[[], Any]]:
    from airlock.store.embedded.replay import SQLiteReplayRuns

    make = postgres_state.replay_runs if backend == "postgres" else lambda: SQLiteReplayRuns(data_dir)
    yield from _opener(make, lambda r: r.close())


@pytest.fixture
def open_export_cursors(backend: str, postgres_state: Any, data_dir: DataDir) -> Iterator[Callable[[], Any]]:
    from airlock.store.embedded.export import SQLiteExportCursors

    make = postgres_state.export_cursors if backend == "postgres" else lambda: SQLiteExportCursors(data_dir.state_db)
    yield from _opener(make, lambda r: r.close())


@pytest.fixture
def open_sampling_state(backend: str, postgres_state: Any, data_dir: DataDir) -> Iterator[Callable[[], Any]]:
    from airlock.store.embedded.sampling import SQLiteSamplingState

    make = postgres_state.sampling_state if backend == "postgres" else lambda: SQLiteSamplingState(data_dir)
    yield from _opener(make, lambda r: r.close())


@pytest.fixture
def take_sampler_lock(backend: str, postgres_state: Any, data_dir: DataDir) -> Iterator[Callable[[], Any]]:
    """Takes the sampler lock without waiting (None while it is held); what it took is released after."""
    from airlock.store.embedded.sampling import FileSamplerLock

    take = postgres_state.take_sampler_lock if backend == "postgres" else lambda: FileSamplerLock.take(data_dir)
    yield from _opener(take, lambda lock: lock.release() if lock is not None else None)


@pytest.fixture
def open_writer_registry(backend: str, postgres_state: Any, data_dir: DataDir) -> Iterator[Callable[[], Any]]:
    from airlock.store.embedded.nodes import SQLiteWriterRegistry

    if backend == "postgres":
        yield from _opener(postgres_state.writer_registry, lambda r: r.close())
    else:
        yield from _opener(lambda: SQLiteWriterRegistry(data_dir.state_db), lambda r: None)
