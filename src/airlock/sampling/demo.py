"""The demo's sampling section: decide the run's traces (the traffic is over), show what was kept and
why, and name the command that shows it again."""

from __future__ import annotations

import os
from pathlib import Path

from rich.console import Console

from airlock.config import load_config
from airlock.sampling.report import sampling_status
from airlock.sampling.service import take_sampler_lock
from airlock.sampling.stage import SamplingPass
from airlock.store.embedded import DataDir

# Sampling as the demo runs it: a small budget, so the busy keys are sampled down and the rare and
# failing traces stand out, and a replay reserve of every dropped trace, so the replay and drift
# reports that follow still read the whole record.
DEMO_SAMPLING = {
    "enabled": True,
    "interval_s": 1.0,
    "decision_wait_s": 2.0,
    "span_budget_per_hour": 40_000,  # the demo sends a burst of ~1,300 spans in under a minute
    "keep_statuses": ["error", "cancelled"],
    "rare": {"warmup_traces": 40, "below": 0.02},  # a short run: count signatures as rare early
    "replay_reserve": 1.0,
}


def sampling_demo(console: Console, config_path: Path, cli: str) -> None:
    config = load_config(config_path)
    if not config.sampling.enabled:
        return
    store = DataDir.at(config.data_dir)
    lock = take_sampler_lock(store)
    if lock is not None:
        try:
            SamplingPass(config, store).run_until_caught_up(flush=True)
        finally:
            lock.release()
    status = sampling_status(store, config.sampling.span_budget_per_hour)
    kept = {r["reason"]: r["traces"] for r in status.by_reason if r["outcome"] == "kept"}
    dropped = sum(r["traces"] for r in status.by_reason if r["outcome"] != "kept")
    traces, estimated = status.totals["traces"]
    console.print(
        f"\n[bold]Tail sampling[/bold] (budget {config.sampling.span_budget_per_hour:,} spans/hour): "
        f"kept {sum(kept.values())} of {traces} traces ("
        + ", ".join(f"{n} {reason}" for reason, n in kept.items())
        + f"), dropped {dropped} (kept as summaries; payloads in the replay reserve); "
        f"traces estimated from the kept ones with their adjusted counts: {estimated:,.0f} (exact {traces})"
    )
    console.print(f"  {cli} sample status -c {os.path.relpath(config_path)}      # what was kept and why")
