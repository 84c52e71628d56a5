"""The embedded backend's stores, opened on one data directory."""

from __future__ import annotations

from typing import TYPE_CHECKING

from airlock.config.schema import Config
from airlock.errors import StoreUnavailable
from airlock.store.embedded.demo import DuckDBDemoRecord
from airlock.store.embedded.energy import DuckDBCallFacts, DuckDBEnergyAggregator, SQLiteEnergyReadings
from airlock.store.embedded.export import SegmentFeed, SQLiteExportCursors
from airlock.store.embedded.layout import DataDir
from airlock.store.embedded.ledger import DuckDBBillReader, DuckDBRecordOwners, SQLiteLedgerItems
from airlock.store.embedded.limits import SQLiteLimits
from airlock.store.embedded.nodes import SQLiteWriterRegistry
from airlock.store.embedded.query import BlobReader, DuckDBSpanReader
from airlock.store.embedded.query_engine import DuckDBSpanQuery
from airlock.store.embedded.replay import DuckDBReplaySelection, SQLiteReplayRuns
from airlock.store.embedded.sampling import FileSamplerLock, embedded_sampling_stores
from airlock.store.embedded.slices import ParquetSliceCandidates

if TYPE_CHECKING:
    from airlock.store import Stores


def open_embedded(config: Config) -> Stores:
    return open_embedded_at(config.data_dir)


def open_embedded_at(data_dir: str) -> Stores:
    from airlock.store import Stores

    data = DataDir.at(data_dir)
    try:
        data.create()
    except OSError as e:
        raise StoreUnavailable(f"the data directory {data_dir} is not usable: {e.strerror or e}") from e
    spans = DuckDBSpanReader(data)
    blobs = BlobReader(data)
    return Stores(
        backend="embedded",
        data=data,
        spans=spans,
        payloads=blobs,
        blob_index=blobs,
        writers=SQLiteWriterRegistry(data.state_db),
        drift=spans,
        query=DuckDBSpanQuery(data),
        slices=ParquetSliceCandidates(data),
        replay=DuckDBReplaySelection(data),
        sampling=embedded_sampling_stores(data),
        bills=DuckDBBillReader(data),
        owners=DuckDBRecordOwners(data),
        call_facts=DuckDBCallFacts(data),
        energy_rollup=DuckDBEnergyAggregator(),
        export_feed=SegmentFeed(data),
        demo=DuckDBDemoRecord(data),
        open_ledger_items=lambda: SQLiteLedgerItems(data.state_db),
        open_energy_readings=lambda: SQLiteEnergyReadings(data.state_db),
        open_replay_runs=lambda: SQLiteReplayRuns(data),
        open_export_cursors=lambda: SQLiteExportCursors(data.state_db),
        open_limits=lambda: SQLiteLimits(data.state_db),
        take_leader=lambda name: FileSamplerLock.take(data, name),
    )
