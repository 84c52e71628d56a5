"""The store, split by concern: writers (segments, payloads), readers per analysis, and control-plane
repositories. Each concern's protocols live in a module of this package; a backend is a folder
beside them (`embedded/` today). `build_stores(config)` opens the backend the config's `store:`
section names, and is the only place that chooses one."""

from __future__ import annotations

from dataclasses import dataclass

from airlock.config.schema import Config
from airlock.store.drift import DriftReader
from airlock.store.embedded.layout import DataDir
from airlock.store.interface import PayloadReader, SpanReader
from airlock.store.nodes import WriterRegistry
from airlock.store.query import SpanQuery
from airlock.store.replay import ReplaySelection
from airlock.store.sampling import SamplingStores
from airlock.store.slices import SliceCandidates


@dataclass
class Stores:
    """One backend's stores, by concern. `data` is the local data directory: the recorder's writer
    processes write their write-ahead files, spill and segments under it."""

    backend: str
    data: DataDir
    spans: SpanReader  # traces, spans and hops by trace
    payloads: PayloadReader  # request and response bytes by digest
    writers: WriterRegistry
    drift: DriftReader  # provider usage beside local counts (pre-flight calibration, tokens drift)
    query: SpanQuery  # group-by queries over any attribute (airlock query)
    slices: SliceCandidates  # what the slice finder counts over
    replay: ReplaySelection  # which traces and calls a replay takes
    sampling: SamplingStores  # the sampler's feed, decisions, state, report and collection


def build_stores(config: Config) -> Stores:
    """Open the configured backend; raises StoreUnavailable naming what cannot be used."""
    backend = config.store.backend
    if backend == "embedded":
        from airlock.store.embedded.stores import open_embedded

        return open_embedded(config)
    raise AssertionError(f"store backend {backend!r} passed validation but has no implementation")


__all__ = ["Stores", "build_stores"]
