"""Drift between the local token count and the provider's bill: per cell (model, script, upstream, ...),
the distribution of provider/local - 1, a recommended safety margin with its confidence, and flags for
a probably wrong tokenizer mapping and for drift that changed over time.

The margin is a distribution-free upper confidence bound on the 95th percentile of the drift: the k-th
smallest of n observations, with k the least order statistic whose chance of lying at or above the true
95th percentile is at least 95% (binomial). It needs at least 59 observations (0.95^59 < 0.05)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from airlock.store.drift import DRIFT_DIMENSIONS, TOKEN_SIDES, DriftReader

COVERAGE, CONFIDENCE = 0.95, 0.95
DIMENSIONS = DRIFT_DIMENSIONS
MAPPING_SUSPECT = 0.10  # a steady drift this large is more likely a wrong tokenizer than noise
SHIFT = 0.05  # a change of median drift this large between the two halves of the window is flagged


@dataclass
class Cell:
    key: dict[str, str]
    ratios: list[float]  # in time order
    times: list[int]
    n: int = 0
    mean: float = 0.0
    p50: float = 0.0
    p95: float = 0.0
    p99: float = 0.0
    max: float = 0.0
    margin: float | None = None  # None: not enough observations for the stated confidence
    flags: list[str] = field(default_factory=list)


def quantile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return math.nan
    pos = q * (len(sorted_values) - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def upper_bound_rank(n: int, coverage: float = COVERAGE, confidence: float = CONFIDENCE) -> int | None:
    """The 1-based rank k of the order statistic that bounds the coverage-quantile from above with the
    given confidence, or None when n is too small."""
    log_q, log_p = math.log(coverage), math.log1p(-coverage)
    cumulative = 0.0  # P(Binomial(n, coverage) <= k - 1), summed in log space (no overflow for large n)
    for k in range(1, n + 1):
        j = k - 1
        log_pmf = math.lgamma(n + 1) - math.lgamma(j + 1) - math.lgamma(n - j + 1) + j * log_q + (n - j) * log_p
        cumulative += math.exp(log_pmf)
        if cumulative >= confidence:
            return k
    return None


def summarise(cell: Cell) -> Cell:
    values = sorted(cell.ratios)
    n = len(values)
    cell.n = n
    cell.mean = sum(values) / n
    cell.p50, cell.p95, cell.p99 = (quantile(values, q) for q in (0.5, 0.95, 0.99))
    cell.max = values[-1]
    k = upper_bound_rank(n)
    cell.margin = max(0.0, values[k - 1]) if k else None
    spread = quantile(values, 0.9) - quantile(values, 0.1)
    if (
        abs(cell.p50) >= MAPPING_SUSPECT
        and spread <= max(0.1, abs(cell.p50) / 2)
        and cell.key.get("script")
        not in (
            "Latin",
            "none",
            None,
        )
    ):
        cell.flags.append(f"steady {cell.p50:+.0%} on {cell.key.get('script')} text: is the tokenizer mapping right?")
    half = n // 2
    if half >= 10:
        first, second = sorted(cell.ratios[:half]), sorted(cell.ratios[half:])
        before, after = quantile(first, 0.5), quantile(second, 0.5)
        if abs(after - before) >= SHIFT:
            cell.flags.append(f"drift changed from {before:+.1%} to {after:+.1%} (did the provider change tokenizer?)")
    return cell


def drift_cells(reader: DriftReader, by: list[str], since_ns: int | None = None, what: str = "input") -> list[Cell]:
    """Cells of drift for input (prompt) or output (completion) tokens, largest first."""
    unknown = [d for d in by if d not in DIMENSIONS]
    if unknown:
        raise ValueError(f"cannot group by {unknown}; choose from {', '.join(DIMENSIONS)}")
    if what not in TOKEN_SIDES:
        raise ValueError(f"drift is of {' or '.join(TOKEN_SIDES)} tokens, not {what!r}")
    names = by or ["all"]
    cells: dict[tuple[str, ...], Cell] = {}
    for r in reader.token_ratios(by, since_ns, what):
        key = r.key if by else ("all",)
        cell = cells.get(key)
        if cell is None:
            cell = cells[key] = Cell(dict(zip(names, key, strict=True)), [], [])
        cell.ratios.append(r.ratio)
        cell.times.append(r.start_ns)
    return sorted((summarise(c) for c in cells.values()), key=lambda c: (-abs(c.p50), -c.n))


def margins(reader: DriftReader, since_ns: int | None = None) -> dict[tuple[str, str], Cell]:
    """The calibration the pre-flight check applies: cells by (model, script)."""
    return {(c.key["model"], c.key["script"]): c for c in drift_cells(reader, ["model", "script"], since_ns)}
