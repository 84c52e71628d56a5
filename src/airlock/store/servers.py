"""The server backends a deployment's `store:` section names, laid over the embedded stores of the
node's data directory: each concern with a server named moves there, the others stay embedded.
Secrets are read from the environment variables the config names, here and nowhere else."""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from airlock.config.schema import ClickHouseBackend, Config, PostgresBackend, RedisBackend, S3Backend
from airlock.errors import StoreError, StoreUnavailable
from airlock.store.interface import TraceFilter
from airlock.store.replay import Payloads, RecordedPair, ReplaySelection, TraceSelection
from airlock.store.sampling import RetentionReads, SamplingStateRepository, SamplingStores

if TYPE_CHECKING:
    from airlock.store import Stores
    from airlock.store.clickhouse.transport import ClickHouseTransport
    from airlock.store.s3 import S3Bucket


def secret(environ: Mapping[str, str], var: str, what: str) -> str:
    value = environ.get(var)
    if not value:
        raise StoreUnavailable(f"{what}: the environment variable {var} is not set")
    return value


class SharedCursorRetention:
    """What compaction reads when the sampler's state is in PostgreSQL: how far the sampler has
    decided each writer from there, the verdicts from the record's own decision files."""

    def __init__(self, open_state: Callable[[], SamplingStateRepository], verdicts: RetentionReads) -> None:
        self._open_state = open_state
        self._verdicts = verdicts

    def decided_through(self, writer_id: str) -> int:
        """Asked once per compaction: a connection for the question, closed after it."""
        state = self._open_state()
        try:
            return state.decided_through(writer_id)
        finally:
            state.close()

    def verdicts(self, trace_ids: pa.Array) -> pa.Table | None:
        return self._verdicts.verdicts(trace_ids)


def with_postgres(stores: Stores, cfg: PostgresBackend, environ: Mapping[str, str]) -> Stores:
    """Control-plane state in PostgreSQL: ledger items, energy readings, replay runs, export cursors,
    the sampler's state and lock, and the writer registry."""
    from airlock.store.postgres import PostgresState

    dsn = secret(environ, cfg.dsn_env, "store.postgres")
    try:
        state = PostgresState(dsn)
    except StoreUnavailable as e:
        raise StoreUnavailable(f"store.postgres ({cfg.dsn_env}) cannot be used: {e.detail}") from None
    sampling = dataclasses.replace(
        stores.sampling,
        open_state=state.sampling_state,
        take_lock=state.take_sampler_lock,
        retention=SharedCursorRetention(state.sampling_state, stores.sampling.retention),
    )
    return dataclasses.replace(
        stores,
        backend=_joined(stores.backend, "postgres"),
        writers=state.writer_registry(),
        sampling=sampling,
        open_ledger_items=state.ledger_items,
        open_energy_readings=state.energy_readings,
        open_replay_runs=state.replay_runs,
        open_export_cursors=state.export_cursors,
    )


def with_redis(stores: Stores, cfg: RedisBackend, environ: Mapping[str, str], serving: bool) -> Stores:
    """Rate buckets, budgets and idempotency keys in Redis, shared by every replica; while Redis is
    away they answer by cfg.on_unavailable. Checked reachable when `serving` (a gateway that starts
    without it refuses to); the read commands do not need it."""
    from airlock.store.redis import open_redis

    url = secret(environ, cfg.url_env, "store.redis")
    if serving:
        limits = open_redis(url, cfg.prefix)
        try:
            limits.check()
        except StoreUnavailable as e:
            raise StoreUnavailable(f"store.redis ({cfg.url_env}) cannot be used: {e.detail}") from None
        finally:
            limits.close()
    return dataclasses.replace(
        stores,
        backend=_joined(stores.backend, "redis"),
        open_limits=lambda: open_redis(url, cfg.prefix),
        limits_fail="open" if cfg.on_unavailable == "fail_open" else "closed",
    )


def open_bucket(cfg: S3Backend, environ: Mapping[str, str]) -> S3Bucket:
    """The region's payload bucket, checked reachable (StoreUnavailable naming it, never the secret)."""
    from airlock.store.s3 import open_s3

    access = secret(environ, cfg.access_key_env, "store.s3")
    secret_key = secret(environ, cfg.secret_key_env, "store.s3")
    bucket = open_s3(cfg.endpoint, cfg.bucket, access, secret_key, cfg.region, cfg.prefix)
    try:
        bucket.check()
    except StoreUnavailable as e:
        raise StoreUnavailable(f"store.s3 cannot be used: {e.detail}") from None
    return bucket


class ReplayPayloadsFrom:
    """A replay selection whose payloads come from another reader (the object store's)."""

    def __init__(self, selection: ReplaySelection, payloads: Payloads) -> None:
        self._selection = selection
        self._payloads = payloads

    def traces(self, flt: TraceFilter, limit: int | None) -> TraceSelection:
        return self._selection.traces(flt, limit)

    def model_calls(self, trace_ids: Sequence[str], kinds: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
        return self._selection.model_calls(trace_ids, kinds)

    def recorded_pairs(self, run: str) -> list[RecordedPair]:
        return self._selection.recorded_pairs(run)

    def payloads(self, digests: Sequence[str]) -> Payloads:
        return self._payloads


def with_s3(stores: Stores, cfg: S3Backend, environ: Mapping[str, str]) -> Stores:
    """Payload packs in an object store, located through the record's blob index."""
    from airlock.store.s3 import S3PayloadReader

    reader = S3PayloadReader(open_bucket(cfg, environ), stores.blob_index)
    return dataclasses.replace(
        stores,
        backend=_joined(stores.backend, "s3"),
        payloads=reader,
        replay=ReplayPayloadsFrom(stores.replay, reader),
    )


def open_clickhouse(cfg: ClickHouseBackend, state: PostgresBackend, environ: Mapping[str, str]) -> ClickHouseTransport:
    """The region's ClickHouse database, migrated (under a PostgreSQL lock, so replicas starting at
    once migrate it once) and with its retention set."""
    from airlock.store.clickhouse.migrate import apply_migrations, set_retention
    from airlock.store.clickhouse.transport import HttpTransport
    from airlock.store.postgres.locks import PostgresLeaderLock

    url = secret(environ, cfg.url_env, "store.clickhouse")
    dsn = secret(environ, state.dsn_env, "store.postgres")
    try:
        transport = HttpTransport(url, cfg.database)
        deadline = time.monotonic() + 60
        while (lock := PostgresLeaderLock.take(dsn, f"clickhouse-migrations:{cfg.database}")) is None:
            if time.monotonic() > deadline:
                raise StoreUnavailable("another node has held the migration lock for a minute")
            time.sleep(0.1)
        try:
            apply_migrations(transport)
            set_retention(transport, cfg.retention_days)
        finally:
            lock.release()
    except StoreError as e:
        raise StoreUnavailable(f"store.clickhouse ({cfg.url_env}) cannot be used: {e.detail}") from None
    return transport


def with_clickhouse(
    stores: Stores, cfg: ClickHouseBackend, state: PostgresBackend, environ: Mapping[str, str]
) -> Stores:
    """The record (spans, hops, the blob index) in ClickHouse, shared by every node of the region:
    every reader of the record reads it there, and one node of all exports it."""
    from airlock.store.clickhouse.demo import ClickHouseDemoRecord
    from airlock.store.clickhouse.drift import ClickHouseDriftReader
    from airlock.store.clickhouse.energy import ClickHouseCallFacts
    from airlock.store.clickhouse.export import ClickHouseExportFeed
    from airlock.store.clickhouse.ledger import ClickHouseBillReader, ClickHouseRecordOwners
    from airlock.store.clickhouse.query import ClickHouseSpanQuery
    from airlock.store.clickhouse.replay import ClickHouseBlobLocator, ClickHouseReplaySelection
    from airlock.store.clickhouse.sampling import clickhouse_sampling_stores
    from airlock.store.clickhouse.slices import ClickHouseSliceCandidates
    from airlock.store.clickhouse.spans import ClickHouseSpanReader
    from airlock.store.embedded.query import LocalPacks
    from airlock.store.postgres.locks import PostgresLeaderLock

    transport = open_clickhouse(cfg, state, environ)
    dsn = secret(environ, state.dsn_env, "store.postgres")
    locator = ClickHouseBlobLocator(transport)
    payloads = LocalPacks(stores.data, locator)  # S3, laid over after this, reads every node's
    return dataclasses.replace(
        stores,
        backend=_joined(stores.backend, "clickhouse"),
        spans=ClickHouseSpanReader(transport),
        drift=ClickHouseDriftReader(transport),
        query=ClickHouseSpanQuery(transport),
        slices=ClickHouseSliceCandidates(transport),
        bills=ClickHouseBillReader(transport),
        owners=ClickHouseRecordOwners(transport),
        call_facts=ClickHouseCallFacts(transport),
        export_feed=ClickHouseExportFeed(transport),
        demo=ClickHouseDemoRecord(transport),
        blob_index=locator,
        payloads=payloads,
        replay=ClickHouseReplaySelection(transport, payloads),
        take_leader=lambda name: PostgresLeaderLock.take(dsn, name),
        sampling=clickhouse_sampling_stores(transport, stores.sampling.open_state, stores.sampling.take_lock),
    )


def _joined(backend: str, name: str) -> str:
    return name if backend == "embedded" else f"{backend}+{name}"


def lay_servers(
    stores: Stores, config: Config, region: str, environ: Mapping[str, str] | None = None, serving: bool = False
) -> Stores:
    """The node's stores with every server backend of `region` laid over the embedded ones."""
    env = os.environ if environ is None else environ
    servers = config.store.for_region(region)
    if region != config.node.region and servers.clickhouse is None:
        raise StoreUnavailable(
            f"region {region!r} keeps its record on its own nodes (no store.regions.{region}.clickhouse): "
            "a cross-region view reads each region's ClickHouse"
        )
    if servers.postgres is not None:
        stores = with_postgres(stores, servers.postgres, env)
    if servers.redis is not None:
        stores = with_redis(stores, servers.redis, env, serving)
    if servers.clickhouse is not None and servers.postgres is not None:  # the config requires both
        stores = with_clickhouse(stores, servers.clickhouse, servers.postgres, env)
    if servers.s3 is not None:
        stores = with_s3(stores, servers.s3, env)
    return stores


__all__ = ["SamplingStores", "lay_servers", "secret", "with_postgres", "with_redis"]
