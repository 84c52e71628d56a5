"""`airlock sample gc`: with the gateway stopped, drop what sampling did not keep everywhere at once.

Compaction in a running gateway already drops dropped traces' spans as it merges segments; this also
rewrites segments that will never be merged again (the last small ones), and releases payloads:

1. rewrite every span (and hop) segment holding spans of a dropped trace outside the replay reserve;
2. referenced = every payload digest named by a remaining span or by a write-ahead file not yet
   replayed; a digest in the blob index that nothing references is released (payloads are shared
   between traces by deduplication, so a blob stays while any remaining span names it);
3. rewrite the blob index without the released digests (so no writer will deduplicate against them);
4. rewrite each pack file that held one: frames whose blobs are all released become holes; a frame
   that also holds kept blobs is recompressed with the released bytes zeroed, in place of the same
   length, so every index row of a kept blob stays valid even if the rewrite is interrupted
   (the store's RecordCollector does each step; this module decides what goes).

It needs the gateway stopped because a live writer deduplicates new payloads against an in-memory
window of recent digests: releasing one it may still name would lose a future payload. Every writer's
lock is taken first; if any is held, nothing is done."""

from __future__ import annotations

from dataclasses import dataclass

from airlock.sampling.retention import SampledRetention
from airlock.store.embedded.layout import DataDir
from airlock.store.embedded.sampling import embedded_sampling_stores
from airlock.store.sampling import SamplingStores


@dataclass
class CollectResult:
    segments_rewritten: int = 0
    spans_removed: int = 0
    blobs_released: int = 0
    packs_rewritten: int = 0
    pack_bytes_before: int = 0
    pack_bytes_after: int = 0


def collect(data: DataDir, stores: SamplingStores | None = None) -> CollectResult:
    """Drop what sampling did not keep from the whole record of `data` (through `stores`, the embedded
    ones on it by default). Raises GatewayRunning, doing nothing, while a writer is alive."""
    stores = stores or embedded_sampling_stores(data)
    collector = stores.collector
    with collector.writers_stopped():
        result = CollectResult()
        pruned = collector.prune_segments(SampledRetention(data, stores.retention).retain)
        result.segments_rewritten, result.spans_removed = pruned.segments_rewritten, pruned.spans_removed
        # Payloads are shared between traces by deduplication: a blob stays while anything names it.
        released = collector.indexed_payloads() - collector.referenced_payloads()
        result.blobs_released = len(released)
        if released:
            freed = collector.release_payloads(released)
            result.packs_rewritten = freed.packs_rewritten
            result.pack_bytes_before, result.pack_bytes_after = freed.bytes_before, freed.bytes_after
        else:
            result.pack_bytes_before = result.pack_bytes_after = collector.payload_bytes()
        return result
