"""The sampler pass over the written record: read span segments not read yet (a cursor per writer in
SQLite), feed the sampler, decide the complete traces, write their decisions and the drop summaries,
and commit the cursor, the waiting traces and the model together. Nothing here runs on the request
path or in the writer thread; compaction reads the decisions later to drop what was not kept."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from airlock.config.schema import Config
from airlock.sampling.facts import TraceState
from airlock.sampling.reading import FactReader
from airlock.sampling.sampler import Decision, Sampler
from airlock.sampling.summaries import drop_summaries
from airlock.store.embedded.layout import DataDir
from airlock.store.embedded.sampling import embedded_sampling_stores
from airlock.store.sampling import PassCommit, SamplingStateRepository, SamplingStores

_BATCH_ROWS = 8192  # span rows read at a time: a segment's size bounds the memory used


@dataclass
class PassResult:
    pass_no: int = 0
    spans_read: int = 0
    segments_read: int = 0
    skipped: int = 0  # segments merged before the sampler read them: left undecided, never dropped
    decisions: list[Decision] = field(default_factory=list)
    pending: int = 0
    caught_up: bool = True

    @property
    def kept(self) -> int:
        return sum(d.keep and d.traces for d in self.decisions)

    @property
    def decided(self) -> int:
        return sum(d.traces for d in self.decisions)


class SamplingPass:
    """Owns a Sampler across passes (the gateway keeps one alive; the CLI makes one per run). Only one
    may run against a data directory at a time: the caller holds the sampler lock. Should another
    process commit a pass all the same, this one notices before its next pass and starts again from the
    committed state, and a pass of its own that raced one loses at commit (StoreConflict) and is retried.
    `stores`: where the record and the sampler's state live (the embedded stores on `data` by default)."""

    def __init__(
        self,
        config: Config,
        data: DataDir,
        max_spans_per_pass: int = 200_000,
        stores: SamplingStores | None = None,
    ) -> None:
        self.config = config
        self.data = data
        self.stores = stores or embedded_sampling_stores(data)
        self.sampler = Sampler(config.sampling)
        self.reader = FactReader(config)
        self.max_spans = max_spans_per_pass
        self._loaded_at: int | None = None  # the last committed pass the sampler in memory reflects

    def run(self, now_ns: int | None = None, flush: bool = False) -> PassResult:
        """One pass. `flush` decides every waiting trace now (the traffic is over)."""
        try:
            return self._run(now_ns, flush)
        except BaseException:
            # What this pass fed the sampler was not committed: start again from the committed state.
            self._forget()
            raise

    def _forget(self) -> None:
        self.sampler = Sampler(self.config.sampling)
        self._loaded_at = None

    def _load(self, state: SamplingStateRepository) -> int:
        """The last committed pass, with the sampler in memory brought to it."""
        last = state.last_pass()
        if self._loaded_at != last:
            if self._loaded_at is not None:  # another process ran a pass since ours
                self._forget()
            self.sampler.load(state.model(), [TraceState.from_row(row) for row in state.pending()])
            self._loaded_at = last
        return last

    def _run(self, now_ns: int | None, flush: bool) -> PassResult:
        state = self.stores.open_state()
        try:
            result = PassResult(pass_no=self._load(state) + 1)
            cursors = state.cursors()
            advanced: dict[str, int] = {}
            for seg in self.stores.feed.segments_after(cursors):
                through = advanced.get(seg.writer, cursors.get(seg.writer, -1))
                if seg.last <= through:
                    continue
                if result.spans_read >= self.max_spans:
                    result.caught_up = False
                    break
                if seg.first <= through:  # merged before it was read (sampling was off): leave it whole
                    result.skipped += 1
                else:
                    clock = time.time_ns() if now_ns is None else now_ns
                    origin = f"{seg.writer}:{seg.first}"
                    rows = self.stores.feed.span_rows(seg, self.reader.columns, _BATCH_ROWS)
                    for facts in self.reader.read(rows):
                        self.sampler.add(facts, clock, origin)
                        result.spans_read += 1
                    result.segments_read += 1
                advanced[seg.writer] = seg.last
            now = time.time_ns() if now_ns is None else now_ns
            result.decisions = self.sampler.decide(now, flush=flush and result.caught_up)
            result.pending = len(self.sampler.pending)
            if not advanced and not result.decisions:
                return result  # nothing new: no pass recorded
            self.stores.sink.write_pass(result.pass_no, result.decisions, drop_summaries(result.decisions))
            changed, removed = self.sampler.take_changes()
            stats = {
                "spans_read": result.spans_read,
                "decided": result.decided,
                "kept": result.kept,
                "pending": result.pending,
                "skipped": result.skipped,
            }
            state.commit(
                PassCommit(
                    pass_no=result.pass_no,
                    at_ns=now,
                    cursors={**cursors, **advanced},
                    waiting=self.sampler.oldest_waiting(),
                    changed={t.trace_id: t.to_row() for t in changed},
                    removed=removed,
                    model=self.sampler.dump_model(),
                    stats=stats,
                )
            )
            self._loaded_at = result.pass_no
            self.stores.sink.merge_small_files()
            return result
        finally:
            state.close()

    def run_until_caught_up(self, now_ns: int | None = None, flush: bool = False) -> list[PassResult]:
        results = [self.run(now_ns, flush)]
        while not results[-1].caught_up:
            results.append(self.run(now_ns, flush))
        return results
