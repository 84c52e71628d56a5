"""What the energy report asks of storage: GPU energy counter readings (a control-plane repository), the
model calls of a period as fact rows, and the roll-up of per-call energy into groups."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import pyarrow as pa

from airlock.store.ledger import PricingTables

# What the energy report can be grouped by: the call's model tier, batch bucket, cache (hit | miss),
# tenant, task type, feature, model, upstream, task and the energy's source (measured | profile).
ENERGY_DIMENSIONS = (
    "model_tier", "batch_bucket", "cache", "tenant", "task_type", "feature", "model", "upstream", "task", "source",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Reading:
    device: str
    t_ns: int
    energy_mj: int  # the counter's value: millijoules since it last started (e.g. the driver loaded)


class EnergyReadingRepository(Protocol):
    """GPU energy counter readings, by (device, time). The sampler and gateway workers may add at once."""

    def add(self, readings: Sequence[Reading], source: str) -> int:
        """Store every reading or none, each inserted if absent by (device, t_ns); a repeat of a stored
        reading is ignored. Returns how many were new. Raises errors.ReadingConflict (nothing stored) for a
        different value at a stored device and time, errors.StoreError when the backend fails."""
        ...

    def of(self, device: str, since_ns: int = 0, until_ns: int = 2**62) -> list[Reading]:
        """One device's readings with since_ns <= t_ns <= until_ns, oldest first."""
        ...

    def devices(self) -> list[str]:
        """Every device with a reading, sorted."""
        ...

    def close(self) -> None: ...


class CallFactReader(Protocol):
    def call_facts(self, since_ns: int, until_ns: int, pricing: PricingTables) -> pa.Table:
        """One row per recorded model call that reached an upstream, started in [since_ns, until_ns), not a
        replay, oldest first: span_id, trace_id, task (airlock.task, else the trace), tenant, feature,
        task_type (attributes task_type, else the feature), upstream, model (its config name, resolved as
        the bill resolves it), start_ns, end_ns (never before start_ns), ttft_ms, in_tok, cached, out_tok
        (0 where unknown; local counts where the provider reported none) and weight (how many traces its
        trace stands for under tail sampling). Raises errors.StoreError when the record cannot be read."""
        ...


@dataclass(frozen=True)
class EnergyRollup:
    rows: list[dict[str, Any]]
    total: dict[str, Any]
    no_energy: list[dict[str, Any]]  # upstream, model ('(unknown)' when none), calls: calls without energy


class EnergyAggregator(Protocol):
    def rollup(self, calls: pa.Table, by: Sequence[str], grid_gco2e_per_kwh: float) -> EnergyRollup:
        """Group per-call energy (call_facts' columns plus joules, batch, batch_bucket, cache, tier, source,
        approximate) by ENERGY_DIMENSIONS `by`, the most joules first; calls without joules are left out
        of rows and total and counted in no_energy. A call counts as often as its weight says, except
        measured joules, which already are the GPU's whole reading. Each row and the total hold: calls,
        input_tokens, output_tokens (weighted, rounded), joules, tasks, mean_batch, measured_calls,
        approximate_calls, wh_per_task, gco2e, tokens_per_j, j_per_token, j_per_output_token."""
        ...
