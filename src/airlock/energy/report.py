"""`airlock energy report`: energy per request from the record, by model tier, batch bucket, cache hit,
tenant, task type (attributes['task_type'], else the feature) and more: tokens per joule, joules per
token, watt-hours per task and CO2e from the configured grid intensity.

A request's energy is measured where a GPU bound to its upstream (energy.gpus) has counter readings
covering it: the GPU joules attributed to it (see attribution), with the device's idle energy spread
over its requests in proportion, times PUE. Otherwise it comes from the model's profile, at the batch
size estimated from overlapping requests on the same upstream."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from airlock.config.schema import Config
from airlock.energy.attribution import Attribution, Work, attribute
from airlock.energy.batch import batch_buckets, mean_concurrency
from airlock.energy.profiles import Profiles
from airlock.ledger.lines import pricing_tables
from airlock.store import Stores, build_stores
from airlock.store.energy import ENERGY_DIMENSIONS

DIMENSIONS = ENERGY_DIMENSIONS


@dataclass
class DeviceSummary:
    device: str
    upstream: str
    read_j: float
    attributed_j: float
    idle_j: float
    intervals: int
    short_intervals: int
    unmeasured_intervals: int


@dataclass
class EnergyReport:
    by: list[str]
    rows: list[dict[str, Any]]
    total: dict[str, Any]
    devices: list[DeviceSummary]
    no_energy: list[dict[str, Any]]  # calls with neither a profile nor readings, by upstream and model
    grid_gco2e_per_kwh: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "by": self.by,
            "rows": self.rows,
            "total": self.total,
            "devices": [d.__dict__ for d in self.devices],
            "no_energy": self.no_energy,
            "grid_gco2e_per_kwh": self.grid_gco2e_per_kwh,
        }


def _measure(stores: Stores, config: Config, facts: pa.Table) -> tuple[dict[str, float], set[str], list[DeviceSummary]]:
    """Facility joules per span from GPU readings, the approximate ones, and a summary per device."""
    if not config.energy.gpus or facts.num_rows == 0:
        return {}, set(), []
    cols = facts.select(["span_id", "upstream", "start_ns", "end_ns", "ttft_ms", "in_tok", "cached", "out_tok"])
    rows = cols.to_pylist()
    update_ns = int(config.energy.counter_update_ms * 1e6)
    joules: dict[str, float] = {}
    approximate: set[str] = set()
    devices: list[DeviceSummary] = []
    store = stores.open_energy_readings()
    try:
        lo, hi = min(r["start_ns"] for r in rows), max(r["end_ns"] for r in rows)
        for gpu in config.energy.gpus:
            readings = store.of(gpu.device, lo - 60 * 10**9, hi + 60 * 10**9)
            if len(readings) < 2:
                continue
            first, last = readings[0].t_ns, readings[-1].t_ns
            work = []
            for r in rows:
                if r["upstream"] != gpu.upstream or r["start_ns"] < first or r["end_ns"] > last:
                    continue
                decode_at = r["start_ns"] + int((r["ttft_ms"] or 0.0) * 1e6)
                work.append(
                    Work(
                        r["span_id"],
                        r["start_ns"],
                        r["end_ns"],
                        min(decode_at, r["end_ns"]),
                        max(r["in_tok"] - r["cached"], 0),  # a prefix-cache hit is not processed again
                        r["out_tok"],
                    )
                )
            att: Attribution = attribute(readings, work, update_ns)
            devices.append(
                DeviceSummary(
                    gpu.device,
                    gpu.upstream,
                    att.read_j,
                    att.attributed_j,
                    att.idle_j,
                    att.intervals,
                    att.short_intervals,
                    att.unmeasured_intervals,
                )
            )
            gross = att.read_j / att.attributed_j if att.attributed_j else 0.0  # idle spread in proportion
            for span_id, j in att.joules.items():
                joules[span_id] = joules.get(span_id, 0.0) + j * gross * config.energy.pue
            for w in work:
                joules.setdefault(w.span_id, 0.0)  # covered by readings, drew nothing: measured as zero
            approximate |= att.approximate
    finally:
        store.close()
    return joules, approximate, devices


def energy_report(
    config: Config,
    by: list[str],
    since_ns: int | None = None,
    until_ns: int | None = None,
    stores: Stores | None = None,
) -> EnergyReport:
    """The energy report of a period, read from `stores` (by default the config's)."""
    unknown = [d for d in by if d not in DIMENSIONS]
    if unknown:
        raise ValueError(f"cannot group by {unknown}; choose from {', '.join(DIMENSIONS)}")
    stores = stores or build_stores(config)
    table, devices = span_energy(config, since_ns, until_ns, stores)
    rollup = stores.energy_rollup.rollup(table, by, config.energy.grid_gco2e_per_kwh)
    return EnergyReport(by, rollup.rows, rollup.total, devices, rollup.no_energy, config.energy.grid_gco2e_per_kwh)


def span_energy(
    config: Config, since_ns: int | None = None, until_ns: int | None = None, stores: Stores | None = None
) -> tuple[pa.Table, list[DeviceSummary]]:
    """One row per model call of the period: its facts, its facility joules (NULL without a profile or
    readings), where they came from, the batch it ran in, its cache hit, tier, and whether approximate."""
    stores = stores or build_stores(config)
    facts = stores.call_facts.call_facts(since_ns or 0, until_ns or 2**62, pricing_tables(config))
    n = facts.num_rows
    upstream = np.array(facts.column("upstream").to_pylist(), dtype=object)
    start = facts.column("start_ns").to_numpy(zero_copy_only=False).astype(np.int64)
    end = facts.column("end_ns").to_numpy(zero_copy_only=False).astype(np.int64)
    batch = mean_concurrency(upstream.astype(str), start, end) if n else np.ones(0)
    models = facts.column("model").to_pylist()
    in_tok = facts.column("in_tok").to_numpy(zero_copy_only=False).astype(np.float64)
    cached = facts.column("cached").to_numpy(zero_copy_only=False).astype(np.float64)
    out_tok = facts.column("out_tok").to_numpy(zero_copy_only=False).astype(np.float64)
    span_ids = facts.column("span_id").to_pylist()
    measured, approximate, devices = _measure(stores, config, facts)
    cached = np.minimum(cached, in_tok)
    joules = np.full(n, np.nan)
    tiers = np.array(models, dtype=object)
    source = np.full(n, None, dtype=object)
    profiles = Profiles(config)
    groups: dict[tuple[str, str | None], list[int]] = {}
    for i, key in enumerate(zip(upstream.tolist(), models, strict=True)):
        groups.setdefault(key, []).append(i)
    for (up, model), members in groups.items():
        profile = profiles.get(up, model)
        if profile is None:
            continue
        idx = np.array(members)
        tiers[idx] = profile.tier
        joules[idx] = profile.joules_many(in_tok[idx], cached[idx], out_tok[idx], batch[idx])
        source[idx] = "profile"
    if measured:
        where = {s: i for i, s in enumerate(span_ids)}
        for span_id, j in measured.items():
            joules[where[span_id]] = j
            source[where[span_id]] = "measured"
    tiers = np.where(is_none(tiers), "(unknown)", tiers)
    table = facts.append_column("joules", pa.array(joules, pa.float64(), from_pandas=True))
    table = table.append_column("batch", pa.array(batch, pa.float64()))
    table = table.append_column("batch_bucket", pa.array(batch_buckets(batch).tolist(), pa.string()))
    table = table.append_column("cache", pa.array(np.where(cached > 0, "hit", "miss").tolist(), pa.string()))
    table = table.append_column("tier", pa.array(tiers.tolist(), pa.string()))
    table = table.append_column("source", pa.array(source.tolist(), pa.string()))
    approx = [s in approximate for s in span_ids] if approximate else [False] * n
    table = table.append_column("approximate", pa.array(approx, pa.bool_()))
    return table, devices


def is_none(values: np.ndarray) -> np.ndarray:
    return np.array([v is None for v in values], dtype=bool)
