"""The embedded backend's stores, opened on one data directory."""

from __future__ import annotations

from typing import TYPE_CHECKING

from airlock.config.schema import Config
from airlock.errors import StoreUnavailable
from airlock.store.embedded.layout import DataDir
from airlock.store.embedded.nodes import SQLiteWriterRegistry
from airlock.store.embedded.query import BlobReader, DuckDBSpanReader
from airlock.store.embedded.query_engine import DuckDBSpanQuery
from airlock.store.embedded.replay import DuckDBReplaySelection
from airlock.store.embedded.sampling import embedded_sampling_stores
from airlock.store.embedded.slices import ParquetSliceCandidates

if TYPE_CHECKING:
    from airlock.store import Stores


def open_embedded(config: Config) -> Stores:
    from airlock.store import Stores

    data = DataDir.at(config.data_dir)
    try:
        data.create()
    except OSError as e:
        raise StoreUnavailable(f"the data directory {config.data_dir} is not usable: {e.strerror or e}") from e
    spans = DuckDBSpanReader(data)
    return Stores(
        backend="embedded",
        data=data,
        spans=spans,
        payloads=BlobReader(data),
        writers=SQLiteWriterRegistry(data.state_db),
        drift=spans,
        query=DuckDBSpanQuery(data),
        slices=ParquetSliceCandidates(data),
        replay=DuckDBReplaySelection(data),
        sampling=embedded_sampling_stores(data),
    )
