"""The contract suite's backends. `backend` is the backend a test runs on ("embedded": the data
directory's SQLite state under tmp_path; "postgres": a fresh database from `postgres_dsn`). Each concern
has one fixture here, an opener: it returns a new repository on the same state each time it is called
(two calls: two gateway processes racing), closes them all after the test, and skips a backend that does
not implement the concern."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from airlock.store.embedded.layout import DataDir

BACKENDS = ("embedded", "postgres")


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def postgres_state(backend: str, request: pytest.FixtureRequest) -> Any:
    """The migrated PostgreSQL state of the test's own database (None on another backend)."""
    if backend != "postgres":
        return None
    from airlock.store.postgres import PostgresState

    return PostgresState(request.getfixturevalue("postgres_dsn"))


@pytest.fixture
def embedded_data(tmp_path: Path) -> DataDir:
    """The embedded backend's data directory (its state database is data.state_db)."""
    data = DataDir.at(tmp_path / "data")
    data.create()
    return data


def _opener(
    concern: str, backend: str, makers: dict[str, Callable[[], Any]], close: Callable[[Any], None]
) -> Iterator[Callable[[], Any]]:
    if backend not in makers:
        pytest.skip(f"no {backend} backend for {concern}")
    make = makers[backend]
    opened: list[Any] = []

    def open_one() -> Any:
        repo = make()
        opened.append(repo)
        return repo

    yield open_one
    for repo in opened:
        close(repo)


def _close(repo: Any) -> None:
    repo.close()


@pytest.fixture
def open_ledger_items(backend: str, postgres_state: Any, embedded_data: DataDir) -> Iterator[Callable[[], Any]]:
    from airlock.store.embedded.ledger import SQLiteLedgerItems

    makers = {"embedded": lambda: SQLiteLedgerItems(embedded_data.state_db)}
    if postgres_state is not None:
        makers["postgres"] = postgres_state.ledger_items
    yield from _opener("ledger items", backend, makers, _close)


@pytest.fixture
def open_energy_readings(backend: str, postgres_state: Any, embedded_data: DataDir) -> Iterator[Callable[[], Any]]:
    from airlock.store.embedded.energy import SQLiteEnergyReadings

    makers = {"embedded": lambda: SQLiteEnergyReadings(embedded_data.state_db)}
    if postgres_state is not None:
        makers["postgres"] = postgres_state.energy_readings
    yield from _opener("energy readings", backend, makers, _close)


@pytest.fixture
def open_replay_runs(backend: str, postgres_state: Any, embedded_data: DataDir) -> Iterator[Callable[[], Any]]:
    from airlock.store.embedded.replay import SQLiteReplayRuns

    makers = {"embedded": lambda: SQLiteReplayRuns(embedded_data)}
    if postgres_state is not None:
        makers["postgres"] = postgres_state.replay_runs
    yield from _opener("replay runs", backend, makers, _close)


@pytest.fixture
def open_export_cursors(backend: str, postgres_state: Any, embedded_data: DataDir) -> Iterator[Callable[[], Any]]:
    from airlock.store.embedded.export import SQLiteExportCursors

    makers = {"embedded": lambda: SQLiteExportCursors(embedded_data.state_db)}
    if postgres_state is not None:
        makers["postgres"] = postgres_state.export_cursors
    yield from _opener("export cursors", backend, makers, _close)


@pytest.fixture
def open_sampling_state(backend: str, postgres_state: Any, embedded_data: DataDir) -> Iterator[Callable[[], Any]]:
    from airlock.store.embedded.sampling import SQLiteSamplingState

    makers = {"embedded": lambda: SQLiteSamplingState(embedded_data)}
    if postgres_state is not None:
        makers["postgres"] = postgres_state.sampling_state
    yield from _opener("sampling state", backend, makers, _close)


@pytest.fixture
def take_sampler_lock(backend: str, postgres_state: Any, embedded_data: DataDir) -> Iterator[Callable[[], Any]]:
    """Takes the sampler lock without waiting (None while it is held); what it took is released after."""
    from airlock.store.embedded.sampling import FileSamplerLock

    makers = {"embedded": lambda: FileSamplerLock.take(embedded_data)}
    if postgres_state is not None:
        makers["postgres"] = postgres_state.take_sampler_lock
    yield from _opener("the sampler lock", backend, makers, lambda lock: lock.release() if lock else None)


@pytest.fixture
def open_writer_registry(backend: str, postgres_state: Any, embedded_data: DataDir) -> Iterator[Callable[[], Any]]:
    from airlock.store.embedded.nodes import SQLiteWriterRegistry

    makers: dict[str, Callable[[], Any]] = {"embedded": lambda: SQLiteWriterRegistry(embedded_data.state_db)}
    if postgres_state is not None:
        makers["postgres"] = postgres_state.writer_registry
    yield from _opener("the writer registry", backend, makers, lambda r: r.close() if hasattr(r, "close") else None)
