"""The store, split by concern: writers (segments, payloads), readers per analysis, and control-plane
repositories. Each concern's protocols live in a module of this package; a backend is a folder
beside them (`embedded/` today). `build_stores(config)` opens the backend the config's `store:`
section names, and is the only place that chooses one."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal, Protocol

from airlock.config.schema import Config
from airlock.store.demo import DemoRecord
from airlock.store.drift import DriftReader
from airlock.store.embedded.layout import DataDir
from airlock.store.energy import CallFactReader, EnergyAggregator, EnergyReadingRepository
from airlock.store.export import ExportCursorRepository, ExportFeed
from airlock.store.interface import BlobLocator, PayloadReader, PayloadSink, SegmentSink, SpanReader
from airlock.store.ledger import BillReader, LedgerItemRepository, RecordOwnerReader
from airlock.store.limits import BudgetCounters, IdempotencyKeys, RateBuckets
from airlock.store.nodes import WriterRegistry
from airlock.store.query import SpanQuery
from airlock.store.replay import ReplayRunRepository, ReplaySelection
from airlock.store.sampling import SamplerLock, SamplingStores
from airlock.store.slices import SliceCandidates


class SharedLimits(RateBuckets, BudgetCounters, IdempotencyKeys, Protocol):
    """The counters every worker and replica agrees on: rate buckets, budgets, idempotency keys."""

    def close(self) -> None: ...


@dataclass
class Stores:
    """One deployment's stores, by concern: the readers of the record (each holds no connection
    between calls) and openers of the control-plane repositories (the caller closes what it opens).
    `data` is the local data directory: the recorder's writer processes write their write-ahead files
    and spill under it whatever the backend."""

    backend: str
    data: DataDir
    spans: SpanReader  # traces, spans and hops by trace
    payloads: PayloadReader  # request and response bytes by digest
    blob_index: BlobLocator  # where each payload is: digest -> pack, offset, lengths
    writers: WriterRegistry
    drift: DriftReader  # provider usage beside local counts (pre-flight calibration, tokens drift)
    query: SpanQuery  # group-by queries over any attribute (airlock query)
    slices: SliceCandidates  # what the slice finder counts over
    replay: ReplaySelection  # which traces and calls a replay takes
    sampling: SamplingStores  # the sampler's feed, decisions, state, report and collection
    bills: BillReader  # the bill's lines (ledger)
    owners: RecordOwnerReader  # which tenant a trace or task belongs to (posted items)
    call_facts: CallFactReader  # what energy attribution reads of each call
    energy_rollup: EnergyAggregator  # energy report's grouping
    export_feed: ExportFeed  # OTLP export's batches
    demo: DemoRecord  # what the demo's report reads
    open_ledger_items: Callable[[], LedgerItemRepository]
    open_energy_readings: Callable[[], EnergyReadingRepository]
    open_replay_runs: Callable[[], ReplayRunRepository]
    open_export_cursors: Callable[[], ExportCursorRepository]
    open_limits: Callable[[], SharedLimits]
    # A lock that one process of those sharing the record holds at a time (OTLP export's leader):
    # this node's processes with an embedded record, every node's with a shared one. None: held elsewhere.
    take_leader: Callable[[str], SamplerLock | None]
    limits_fail: Literal["open", "closed"] = "closed"  # what a limit answers while its store is away


def build_stores(
    config: Config, region: str | None = None, environ: Mapping[str, str] | None = None, serving: bool = False
) -> Stores:
    """Open the stores of a node of `region` (default: this node's, node.region): the embedded ones
    of the data directory, with each concern the region's `store:` names moved to its server backend.
    Raises StoreUnavailable naming the backend that cannot be used; `serving`: also the backends only
    a serving gateway needs (Redis's limits)."""
    from airlock.store.embedded.stores import open_embedded
    from airlock.store.servers import lay_servers

    return lay_servers(open_embedded(config), config, region or config.node.region, environ, serving)


def writer_sinks(config: Config, writer_id: str) -> tuple[PayloadSink, SegmentSink]:
    """Where one recorder writer's payloads and segments go, for this node's region. The write-ahead
    file and the spill stay in the local data directory whatever the backend: they are what survives
    a store that is away."""
    from airlock.store.embedded import PackWriter, ParquetSegments

    data = DataDir.at(config.data_dir)
    servers = config.store.for_region(config.node.region)
    retention = None
    if config.sampling.enabled:
        from airlock.sampling.retention import SampledRetention

        # The sampler's cursors are where its state is (the state database, or PostgreSQL).
        retention = SampledRetention(data, build_stores(config).sampling.retention)
    payloads: PayloadSink = PackWriter(data.blobs, writer_id)
    if servers.s3 is not None:
        from airlock.store.s3 import S3PackWriter
        from airlock.store.servers import open_bucket

        payloads = S3PackWriter(open_bucket(servers.s3, os.environ), writer_id)
    if servers.clickhouse is not None and servers.postgres is not None:  # the config requires both
        from airlock.store.clickhouse.sink import ClickHouseSegmentSink
        from airlock.store.servers import open_clickhouse

        return payloads, ClickHouseSegmentSink(open_clickhouse(servers.clickhouse, servers.postgres, os.environ))
    return payloads, ParquetSegments(data, retention)


def embedded_stores(data_dir: str) -> Stores:
    """The embedded stores of one data directory, for commands given --data-dir alone."""
    from airlock.store.embedded.stores import open_embedded_at

    return open_embedded_at(data_dir)


__all__ = ["Stores", "build_stores", "embedded_stores", "writer_sinks"]
