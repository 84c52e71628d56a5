"""The server backends a deployment's `store:` section names, laid over the embedded stores of the
node's data directory: each concern with a server named moves there, the others stay embedded.
Secrets are read from the environment variables the config names, here and nowhere else."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from airlock.config.schema import Config, PostgresBackend, RedisBackend, S3Backend
from airlock.errors import StoreUnavailable
from airlock.store.interface import TraceFilter
from airlock.store.replay import Payloads, RecordedPair, ReplaySelection, TraceSelection
from airlock.store.sampling import RetentionReads, SamplingStateRepository, SamplingStores

if TYPE_CHECKING:
    from airlock.store import Stores
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


def with_redis(stores: Stores, cfg: RedisBackend, environ: Mapping[str, str]) -> Stores:
    """Rate buckets, budgets and idempotency keys in Redis, shared by every replica; while Redis is
    away they answer by cfg.on_unavailable."""
    from airlock.store.redis import open_redis

    url = secret(environ, cfg.url_env, "store.redis")
    limits = open_redis(url, cfg.prefix)
    try:
        limits.check()
    except StoreUnavailable as e:
        limits.close()
        raise StoreUnavailable(f"store.redis ({cfg.url_env}) cannot be used: {e.detail}") from None
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


def _joined(backend: str, name: str) -> str:
    return name if backend == "embedded" else f"{backend}+{name}"


def lay_servers(stores: Stores, config: Config, region: str, environ: Mapping[str, str] | None = None) -> Stores:
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
        stores = with_redis(stores, servers.redis, env)
    if servers.s3 is not None:
        stores = with_s3(stores, servers.s3, env)
    return stores


__all__ = ["SamplingStores", "lay_servers", "secret", "with_postgres", "with_redis"]
