"""The sampler pass over the written record: read span segments not read yet (a cursor per writer in
SQLite), feed the sampler, decide the complete traces, write their decisions and the drop summaries,
and commit the cursor, the waiting traces and the model together. Nothing here runs on the request
path or in the writer thread; compaction reads the decisions later to drop what was not kept."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from airlock.config.schema import Config
from airlock.sampling.reading import FactReader
from airlock.sampling.sampler import Decision, Sampler
from airlock.store.embedded import DataDir
from airlock.store.embedded.sampling import SamplingState, merge_small_files, write_pass
from airlock.store.embedded.segments import live_segments


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
    may run against a data directory at a time: the caller holds run/sampler.lock."""

    def __init__(self, config: Config, data: DataDir, max_spans_per_pass: int = 200_000) -> None:
        self.config = config
        self.data = data
        self.sampler = Sampler(config.sampling)
        self.reader = FactReader(config)
        self.max_spans = max_spans_per_pass
        self._loaded = False

    def run(self, now_ns: int | None = None, flush: bool = False) -> PassResult:
        """One pass. `flush` decides every waiting trace now (the traffic is over)."""
        try:
            return self._run(now_ns, flush)
        except BaseException:
            # What this pass fed the sampler was not committed: start again from the committed state.
            self.sampler = Sampler(self.config.sampling)
            self._loaded = False
            raise

    def _run(self, now_ns: int | None, flush: bool) -> PassResult:
        state = SamplingState(self.data)
        try:
            if not self._loaded:
                self.sampler.load(*state.load())
                self._loaded = True
            result = PassResult(pass_no=state.last_pass() + 1)
            cursors = state.cursors()
            advanced: dict[str, int] = {}
            for seg in live_segments(self.data.spans):
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
                    for facts in self.reader.read(seg.path):
                        self.sampler.add(facts, clock, origin)
                        result.spans_read += 1
                    result.segments_read += 1
                advanced[seg.writer] = seg.last
            now = time.time_ns() if now_ns is None else now_ns
            result.decisions = self.sampler.decide(now, flush=flush and result.caught_up)
            result.pending = len(self.sampler.pending)
            if not advanced and not result.decisions:
                return result  # nothing new: no pass recorded
            write_pass(self.data, result.pass_no, result.decisions)
            changed, removed = self.sampler.take_changes()
            stats = {
                "spans_read": result.spans_read,
                "decided": result.decided,
                "kept": result.kept,
                "pending": result.pending,
                "skipped": result.skipped,
            }
            waiting = self.sampler.oldest_waiting()
            state.commit(
                result.pass_no,
                now,
                {**cursors, **advanced},
                waiting,
                changed,
                removed,
                self.sampler.dump_model(),
                stats,
            )
            merge_small_files(self.data)
            return result
        finally:
            state.close()

    def run_until_caught_up(self, now_ns: int | None = None, flush: bool = False) -> list[PassResult]:
        results = [self.run(now_ns, flush)]
        while not results[-1].caught_up:
            results.append(self.run(now_ns, flush))
        return results
