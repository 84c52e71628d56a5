"""The PostgreSQL backend of the control-plane repositories, for gateway replicas that share one state.

How the lead calls it (`store: {postgres: {dsn_env: NAME}}`, the DSN read from that variable):

    from airlock.store.postgres import PostgresState

    state = PostgresState(dsn)          # connects once and applies the migrations (StoreUnavailable if it can't)
    items = state.ledger_items()        # LedgerItemRepository       (close() when done)
    readings = state.energy_readings()  # EnergyReadingRepository    (close() when done)
    runs = state.replay_runs()          # ReplayRunRepository        (close() when done)
    cursors = state.export_cursors()    # ExportCursorRepository     (close() when done)
    writers = state.writer_registry()   # WriterRegistry             (for the process's lifetime)
    SamplingStores(..., open_state=state.sampling_state, take_lock=state.take_sampler_lock)

Each repository holds a small pool of its own connections (store/postgres/connection.py), closed by its
close(); the PostgresState itself holds none. Every method raises only errors.StoreError subclasses for a
storage failure, as the embedded repositories do: StoreConflict for a lost compare-and-set or a unique key
taken, StoreUnavailable for a server that cannot be reached or a connection it dropped (the next call
connects again). psycopg is imported only inside this package."""

from __future__ import annotations

from airlock.store.postgres.connection import connection_settings
from airlock.store.postgres.energy import PostgresEnergyReadings
from airlock.store.postgres.export import PostgresExportCursors
from airlock.store.postgres.ledger import PostgresLedgerItems
from airlock.store.postgres.migrations import migrate, versions
from airlock.store.postgres.nodes import PostgresWriterRegistry
from airlock.store.postgres.replay import PostgresReplayRuns
from airlock.store.postgres.sampling import PostgresSamplerLock, PostgresSamplingState


class PostgresState:
    """One PostgreSQL database's control-plane state, migrated on opening. Safe to open from several
    processes at once: the migrations run under an advisory lock, each applied once."""

    def __init__(self, dsn: str) -> None:
        connection_settings(dsn)  # a DSN that does not parse is refused before anything connects
        self.dsn = dsn
        self.applied = migrate(dsn)  # the migrations this opening applied (empty: the schema was current)

    def versions(self) -> dict[str, int]:
        """The newest applied migration of each concern."""
        return versions(self.dsn)

    def ledger_items(self) -> PostgresLedgerItems:
        return PostgresLedgerItems(self.dsn)

    def energy_readings(self) -> PostgresEnergyReadings:
        return PostgresEnergyReadings(self.dsn)

    def replay_runs(self) -> PostgresReplayRuns:
        return PostgresReplayRuns(self.dsn)

    def export_cursors(self) -> PostgresExportCursors:
        return PostgresExportCursors(self.dsn)

    def writer_registry(self) -> PostgresWriterRegistry:
        return PostgresWriterRegistry(self.dsn)

    def sampling_state(self) -> PostgresSamplingState:
        return PostgresSamplingState(self.dsn)

    def take_sampler_lock(self) -> PostgresSamplerLock | None:
        """The sampler lock without waiting; None while another process holds it."""
        return PostgresSamplerLock.take(self.dsn)


__all__ = [
    "PostgresEnergyReadings",
    "PostgresExportCursors",
    "PostgresLedgerItems",
    "PostgresReplayRuns",
    "PostgresSamplerLock",
    "PostgresSamplingState",
    "PostgresState",
    "PostgresWriterRegistry",
]
