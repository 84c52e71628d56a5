"""The slice finder: which combinations of attribute values (up to three together) have a failure rate
that stands out from the rest of the traffic, ranked by impact (excess failures).

Every span is a row of dimension codes (one per attribute: a free attribute or a column such as the
tenant, the model or the upstream's region) and one outcome bit: failed, slower than the window's p95,
or costlier than its p95. Values seen fewer than `min_support` times are set aside at load, which is
what keeps attributes of a million distinct values cheap. The search counts, with numpy:
  level 1: every (attribute, value);
  level 2: every value of every other attribute inside each of the `beam` most harmful level-1 slices;
  level 3: the same inside each of the `beam` most harmful level-2 slices.
A combination is counted once, wherever it is reached from.

What is reported: slices whose p-value (airlock.slices.stats), times the number of combinations the
frequent values allow (Bonferroni: the beam looks where the data points, so only counting what it
looked at would understate the chance of a fluke), is under alpha, and whose rate is at least
`min_lift` times the rest's; ranked by excess failures. Then three rules keep one line per cause: a slice
that narrows a reported one without raising its rate is dropped; a slice whose excess a narrower one
holds (90%) gives way to it (region=X & version=Y rather than region=X); and a slice must still stand out
on the spans no higher-ranked slice holds (an overlap of the top slice is an echo of it)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from airlock.config.schema import Config
from airlock.query.cost import price_rates
from airlock.query.fields import ATTR_PREFIX, field_label
from airlock.query.spec import Filter
from airlock.slices.stats import excess, p_values
from airlock.store.query import NS_PER_DAY
from airlock.store.slices import SliceCandidates

# Span columns that can define a slice; ids, times, measures and the outcome's own columns cannot.
DIMENSION_COLUMNS = (
    "kind",
    "airlock.node",
    "airlock.node.region",
    "airlock.tenant",
    "airlock.user",
    "airlock.agent_chain",
    "airlock.intent",
    "gen_ai.operation.name",
    "gen_ai.request.model",
    "gen_ai.response.model",
    "airlock.request.stream",
    "airlock.prompt.name",
    "airlock.prompt.version",
    "airlock.route",
    "airlock.upstream",
    "airlock.upstream.region",
    "airlock.upstream.jurisdiction",
    "airlock.upstream.model",
    "airlock.script",
    "airlock.source",
    "otel.scope.name",
)
METRICS = ("errors", "latency", "cost")
NONE_VALUE = "(none)"


@dataclass(frozen=True)
class SliceOptions:
    metric: str = "errors"
    since_ns: int | None = None
    until_ns: int | None = None
    max_order: int = 3
    min_support: int | None = None  # default: max(20, 0.05% of spans)
    beam: int = 24
    alpha: float = 0.05
    min_lift: float = 1.25
    top: int = 10
    where: tuple[Filter, ...] = ()  # only spans that match every filter, as in `airlock query`


@dataclass
class Slice:
    conditions: tuple[tuple[str, str], ...]
    spans: int
    failures: int
    rate: float
    rest_rate: float
    excess: float
    p_adjusted: float

    @property
    def lift(self) -> float:
        return self.rate / self.rest_rate if self.rest_rate > 0 else float("inf")

    def label(self) -> str:
        return " & ".join(f"{k}={v}" for k, v in self.conditions)


@dataclass
class SliceReport:
    metric: str
    outcome: str  # what counts as a failure for this metric
    spans: int
    failures: int
    tried: int  # slices whose counts were computed
    slices: list[Slice] = field(default_factory=list)
    hypotheses: int = 0  # slices the correction counts: every combination the frequent values allow
    notes: list[str] = field(default_factory=list)


@dataclass
class _Dimension:
    name: str
    codes: np.ndarray  # int32; len(values) means "set aside" (rarer than min_support)
    values: list[str]


def _dictionary_codes(column: pa.ChunkedArray, min_support: int) -> tuple[np.ndarray, list[str]] | None:
    """Codes 0..k-1 for the values seen at least `min_support` times (a missing value is the value
    "(none)"), and k for every rarer value; None when there is nothing to slice on."""
    if not pa.types.is_dictionary(column.type):
        column = pc.dictionary_encode(pc.cast(column, pa.string()) if column.type != pa.string() else column)
    chunks = [c for c in column.unify_dictionaries().chunks if len(c)] if column.num_chunks else []
    if not chunks:
        return None
    dictionary = chunks[0].dictionary
    indices = np.concatenate([c.indices.fill_null(len(dictionary)).to_numpy(zero_copy_only=False) for c in chunks])
    values = [str(v) for v in dictionary.to_pylist()] + [NONE_VALUE]
    counts = np.bincount(indices, minlength=len(values))
    keep = counts >= min_support
    kept = int(keep.sum())
    if kept == 0 or (kept == 1 and counts[keep].sum() == len(indices)):
        return None  # nothing frequent, or one value everywhere: no slice to find here
    remap = np.full(len(values), kept, dtype=np.int32)
    remap[keep] = np.arange(kept, dtype=np.int32)
    return remap[indices], [v for v, k in zip(values, keep, strict=True) if k]


def _strings(column: pa.ChunkedArray) -> pa.ChunkedArray:
    return column.cast(pa.string()) if column.type != pa.string() else column


def _numbers(table: pa.Table, name: str) -> np.ndarray:
    if name not in table.column_names:
        return np.zeros(table.num_rows)
    return table.column(name).to_numpy().astype(np.float64)


def _outcome(table: pa.Table, metric: str, config: Config | None) -> tuple[np.ndarray, str]:
    """Which spans count as failed for the metric, and how that reads."""
    if metric == "errors":
        status = table.column("status").fill_null("").to_numpy(zero_copy_only=False)
        return status == "error", "status = error"
    if metric == "latency":
        values = np.nan_to_num(_numbers(table, "duration_ms"), nan=0.0)
        what = "slower than the window's p95"
    else:
        values, priced = _cost(table, config)
        what = "costlier than the window's p95" + ("" if priced else " (tokens in + out: no prices without --config)")
    return values > np.quantile(values, 0.95), what


def _cost(table: pa.Table, config: Config | None) -> tuple[np.ndarray, bool]:
    """USD per span from the config's prices; tokens in + out when there are none."""
    tokens_in = np.nan_to_num(_numbers(table, "gen_ai.usage.input_tokens"))
    tokens_out = np.nan_to_num(_numbers(table, "gen_ai.usage.output_tokens"))
    names = ("airlock.upstream", "airlock.upstream.model")
    if config is None or not all(n in table.column_names for n in names):
        return tokens_in + tokens_out, False
    day = table.column("start_ns").to_numpy() // NS_PER_DAY
    keys = pa.table(
        {
            "u": _strings(table.column(names[0])).fill_null(""),
            "m": _strings(table.column(names[1])).fill_null(""),
            "d": pa.array(day),
        }
    )
    usd = np.zeros(table.num_rows)
    priced = False
    for row in keys.group_by(["u", "m", "d"]).aggregate([]).to_pylist():
        rates = price_rates(config, row["u"], row["m"], int(row["d"]))
        if rates is None:
            continue
        priced = True
        mask = (
            (keys.column("u").to_numpy(zero_copy_only=False) == row["u"])
            & (keys.column("m").to_numpy(zero_copy_only=False) == row["m"])
            & (day == row["d"])
        )
        usd[mask] = tokens_in[mask] * rates[0] + tokens_out[mask] * rates[1] + rates[4]
    return (usd if priced else tokens_in + tokens_out), priced


MEASURE_COLUMNS = (
    "start_ns",
    "status",
    "duration_ms",
    "gen_ai.usage.input_tokens",
    "gen_ai.usage.output_tokens",
    "airlock.upstream",
    "airlock.upstream.model",
    "airlock.sample.rate",
)


def _load(
    store: SliceCandidates, opts: SliceOptions, config: Config | None
) -> tuple[np.ndarray, list[_Dimension], str, bool]:
    table = store.candidate_spans(opts.since_ns, opts.until_ns, opts.where, MEASURE_COLUMNS, DIMENSION_COLUMNS)
    dims = [c for c in DIMENSION_COLUMNS if c in table.column_names] + sorted(
        c for c in table.column_names if c.startswith(ATTR_PREFIX)
    )
    sampled = False
    if "airlock.sample.rate" in table.column_names:
        rate = table.column("airlock.sample.rate")
        sampled = rate.null_count < len(rate)
        if sampled:  # a dropped trace kept only as replay reserve (adjusted count 0) stands for no traffic
            table = table.filter(pc.fill_null(pc.not_equal(rate, 0.0), True))
    if table.num_rows == 0:
        return np.zeros(0, dtype=bool), [], "", sampled
    failed, what = _outcome(table, opts.metric, config)
    min_support = opts.min_support or max(20, int(table.num_rows * 0.0005))
    out = []
    for d in dims:
        enc = _dictionary_codes(table.column(d), min_support)
        if enc is not None:
            out.append(_Dimension(field_label(d), enc[0], enc[1]))
    return failed, out, what, sampled


class _Search:
    def __init__(self, failed: np.ndarray, dims: list[_Dimension], min_support: int) -> None:
        self.failed = failed
        self.fail_idx = np.flatnonzero(failed)
        self.dims = dims
        self.n = len(failed)
        self.f = int(failed.sum())
        self.min_support = min_support
        # key: frozenset of (dim index, code) -> (spans, failures)
        self.tested: dict[frozenset[tuple[int, int]], tuple[int, int]] = {}

    def children(self, parent: frozenset[tuple[int, int]], rows: np.ndarray | None) -> None:
        """Count every (other dimension, value) inside the parent's rows (all rows for the root)."""
        used = {d for d, _ in parent}
        frows = self.fail_idx if rows is None else rows[self.failed[rows]]
        for di, dim in enumerate(self.dims):
            if di in used:
                continue
            k = len(dim.values)
            codes = dim.codes if rows is None else dim.codes[rows]
            n_counts = np.bincount(codes, minlength=k + 1)[:k]
            f_counts = np.bincount(dim.codes[frows], minlength=k + 1)[:k]
            for code in np.flatnonzero(n_counts >= self.min_support).tolist():
                key = parent | {(di, code)}
                if key not in self.tested:
                    self.tested[key] = (int(n_counts[code]), int(f_counts[code]))

    def mask_of(self, key: frozenset[tuple[int, int]]) -> np.ndarray:
        mask = np.ones(self.n, dtype=bool)
        for di, code in key:
            mask &= self.dims[di].codes == code
        return mask

    def rows_of(self, key: frozenset[tuple[int, int]]) -> np.ndarray:
        return np.flatnonzero(self.mask_of(key))

    def most_harmful(self, order: int, beam: int) -> list[frozenset[tuple[int, int]]]:
        keys = [k for k in self.tested if len(k) == order]
        if not keys:
            return []
        n_s = np.array([self.tested[k][0] for k in keys])
        f_s = np.array([self.tested[k][1] for k in keys])
        ex = excess(f_s, n_s, self.f, self.n)
        ranked = np.argsort(-ex, kind="stable")[:beam]
        return [keys[i] for i in ranked.tolist() if ex[i] > 0]


def combinations_possible(values_per_dimension: list[int], max_order: int) -> int:
    """How many slices of up to `max_order` conditions the frequent values allow: the number of tests
    Bonferroni's correction counts. The beam looks at a data-chosen part of them, so correcting for only
    the slices it counted would understate the chance of a fluke."""
    e = [1] + [0] * max_order  # elementary symmetric sums of the per-dimension value counts
    for k in values_per_dimension:
        for order in range(max_order, 0, -1):
            e[order] += e[order - 1] * k
    return max(1, sum(e[1:]))


SAME_RATE = 1.1  # a condition that raises the rate by less than this adds nothing
EXPLAINS = 0.9  # a sub-slice holding this share of a slice's excess explains it


def _without_redundant(
    keys: list[frozenset[Any]], significant: list[int], rate: np.ndarray, ex: np.ndarray
) -> list[int]:
    """Of the significant slices, drop (1) one whose extra condition adds nothing: its rate is within
    SAME_RATE of a significant slice it narrows; then (2) one explained by a narrower one: a kept
    sub-slice holds EXPLAINS of its excess failures (region=X is explained by region=X & version=Y
    when all of region X's excess failures are on version Y)."""
    index = {keys[i]: i for i in significant}
    redundant = set()
    for i in significant:
        key = keys[i]
        for cond in key if len(key) > 1 else ():
            parent = index.get(key - {cond})
            if parent is not None and rate[i] < SAME_RATE * rate[parent]:
                redundant.add(i)
                break
    kept = [i for i in significant if i not in redundant]
    explained = set()
    for i in kept:
        key = keys[i]
        for cond in key if len(key) > 1 else ():
            parent = index.get(key - {cond})
            if parent is not None and parent not in redundant and ex[i] >= EXPLAINS * ex[parent]:
                explained.add(parent)
    return [i for i in kept if i not in explained]


def _beyond_higher_ranks(
    search: _Search, keys: list[frozenset[Any]], ranked: list[int], opts: SliceOptions, tried: int
) -> list[int]:
    """Keep a slice only if it still stands out on the spans that no higher-ranked slice holds: a
    slice that overlaps the top one (region=X & locale=de when region=X & version=Y fails) is an echo."""
    covered = np.zeros(search.n, dtype=bool)
    out: list[int] = []
    for i in ranked[: 20 * opts.top]:
        if len(out) >= opts.top:
            break
        mask = search.mask_of(keys[i])
        fresh = mask & ~covered
        rest = ~covered & ~mask
        n_fresh, n_rest = int(fresh.sum()), int(rest.sum())
        if n_fresh < search.min_support or n_rest == 0:
            continue
        f_fresh, f_rest = int(search.failed[fresh].sum()), int(search.failed[rest].sum())
        p = p_values(np.array([f_fresh]), np.array([n_fresh]), f_fresh + f_rest, n_fresh + n_rest)[0] * tried
        rate_fresh, rate_rest = f_fresh / n_fresh, f_rest / n_rest
        if p < opts.alpha and rate_fresh >= opts.min_lift * rate_rest and f_fresh > n_fresh * rate_rest:
            out.append(i)
            covered |= mask
    return out


def find_slices(store: SliceCandidates, opts: SliceOptions, config: Config | None = None) -> SliceReport:
    """The slices of the store's spans that stand out on the metric, ranked by excess failures."""
    if opts.metric not in METRICS:
        raise ValueError(f"metric must be one of {', '.join(METRICS)}")
    failed, dims, what, sampled = _load(store, opts, config)
    n, f = len(failed), int(failed.sum())
    report = SliceReport(opts.metric, what, n, f, 0)
    if sampled:
        report.notes.append(
            "the record is tail-sampled: these are the spans kept (every error trace, the rest at per-key"
            " rates), so the rates compared are the kept record's; `airlock query` gives adjusted counts"
        )
    if n == 0:
        report.notes.append("no spans in the window")
        return report
    if f == 0 or f == n:
        report.notes.append(f"{'no' if f == 0 else 'every'} span counts as failed ({what}): nothing stands out")
        return report
    min_support = opts.min_support or max(20, int(n * 0.0005))
    search = _Search(failed, dims, min_support)
    search.children(frozenset(), None)
    for order in range(1, max(1, min(opts.max_order, 3))):
        for parent in search.most_harmful(order, opts.beam):
            search.children(parent, search.rows_of(parent))
    keys = list(search.tested)
    report.tried = len(keys)
    if not keys:
        return report
    hypotheses = combinations_possible([len(d.values) for d in dims], opts.max_order)
    report.hypotheses = hypotheses
    n_s = np.array([search.tested[k][0] for k in keys])
    f_s = np.array([search.tested[k][1] for k in keys])
    ex = excess(f_s, n_s, f, n)
    p_adj = np.minimum(p_values(f_s, n_s, f, n) * hypotheses, 1.0)
    rest_rate = (f - f_s) / np.maximum(n - n_s, 1)
    rate = f_s / n_s
    lift_ok = rate >= opts.min_lift * rest_rate
    significant = np.flatnonzero((p_adj < opts.alpha) & lift_ok & (ex > 0))
    kept = _without_redundant(keys, significant.tolist(), rate, ex)
    kept.sort(key=lambda i: -ex[i])
    kept = _beyond_higher_ranks(search, keys, kept, opts, hypotheses)
    for i in kept:
        conds = tuple(sorted((dims[di].name, dims[di].values[code]) for di, code in keys[i]))
        report.slices.append(
            Slice(conds, int(n_s[i]), int(f_s[i]), float(rate[i]), float(rest_rate[i]), float(ex[i]), float(p_adj[i]))
        )
    return report


def report_rows(report: SliceReport) -> list[dict[str, Any]]:
    return [
        {
            "rank": i + 1,
            "slice": s.label(),
            "spans": s.spans,
            "failures": s.failures,
            "rate": s.rate,
            "rest_rate": s.rest_rate,
            "lift": s.lift,
            "excess": s.excess,
            "p_adjusted": s.p_adjusted,
        }
        for i, s in enumerate(report.slices)
    ]
