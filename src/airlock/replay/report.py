"""The replay report: per trace and in aggregate, how the candidate compared with what was recorded,
with 95% confidence intervals for the headline rates (Wilson) and mean differences (normal approximation)."""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field
from typing import Any

import orjson

from airlock.store import Stores
from airlock.store.replay import ReplayRunRepository, ReplaySelection

Z95 = 1.959964  # two-sided 95% normal quantile


def wilson(successes: int, n: int) -> tuple[float, float]:
    if n == 0:
        return (math.nan, math.nan)
    p = successes / n
    denom = 1 + Z95**2 / n
    centre = (p + Z95**2 / (2 * n)) / denom
    half = Z95 * math.sqrt(p * (1 - p) / n + Z95**2 / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


# Two-sided 95% quantiles of Student's t for 1..30 degrees of freedom (standard tables); beyond, the normal.
_T95 = (
    12.706,
    4.303,
    3.182,
    2.776,
    2.571,
    2.447,
    2.365,
    2.306,
    2.262,
    2.228,
    2.201,
    2.179,
    2.160,
    2.145,
    2.131,
    2.120,
    2.110,
    2.101,
    2.093,
    2.086,
    2.080,
    2.074,
    2.069,
    2.064,
    2.060,
    2.056,
    2.052,
    2.048,
    2.045,
    2.042,
)


def mean_ci(values: list[float]) -> tuple[float, float, float]:
    """Mean and its 95% interval (Student's t). Turns of one trace are not independent, so with many
    turns per trace the interval is somewhat narrower than it should be."""
    if not values:
        return (math.nan, math.nan, math.nan)
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return (mean, math.nan, math.nan)
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    q = _T95[n - 2] if n - 1 <= len(_T95) else Z95
    half = q * sd / math.sqrt(n)
    return (mean, mean - half, mean + half)


@dataclass
class Rate:
    hits: int
    n: int

    @property
    def value(self) -> float:
        return self.hits / self.n if self.n else math.nan

    @property
    def ci(self) -> tuple[float, float]:
        return wilson(self.hits, self.n)

    def text(self) -> str:
        if not self.n:
            return "—"
        lo, hi = self.ci
        return f"{self.value:.1%} [{lo:.1%}, {hi:.1%}] (n={self.n})"


@dataclass
class Report:
    name: str
    target: str
    items: dict[str, int]
    traces: list[dict[str, Any]] = field(default_factory=list)
    exact: Rate = field(default_factory=lambda: Rate(0, 0))
    tool_agreement: Rate = field(default_factory=lambda: Rate(0, 0))
    schema_valid: Rate = field(default_factory=lambda: Rate(0, 0))
    diverged: Rate = field(default_factory=lambda: Rate(0, 0))
    failed_turns: int = 0
    finish_reasons: dict[str, int] = field(default_factory=dict)
    deltas: dict[str, tuple[float, float, float]] = field(default_factory=dict)
    tool_results_identical: Rate = field(default_factory=lambda: Rate(0, 0))
    dropped_params: dict[str, int] = field(default_factory=dict)
    judge: dict[str, int] = field(default_factory=dict)  # preference -> turns
    judge_rationales: list[str] = field(default_factory=list)

    @property
    def candidate_preferred(self) -> Rate:
        """Among the judge's decisive verdicts, how often it preferred the candidate."""
        decisive = self.judge.get("candidate", 0) + self.judge.get("recorded", 0)
        return Rate(self.judge.get("candidate", 0), decisive)

    def to_json(self) -> dict[str, Any]:
        def rate(r: Rate) -> dict[str, Any]:
            return {"rate": r.value, "ci95": list(r.ci), "hits": r.hits, "n": r.n}

        return {
            "name": self.name,
            "target": self.target,
            "items": self.items,
            "exact_match": rate(self.exact),
            "tool_call_agreement": rate(self.tool_agreement),
            "structured_output_valid": rate(self.schema_valid),
            "traces_diverged": rate(self.diverged),
            "tool_results_identical": rate(self.tool_results_identical),
            "failed_turns": self.failed_turns,
            "finish_reasons": self.finish_reasons,
            "dropped_params": self.dropped_params,
            "deltas": {k: {"mean": m, "ci95": [lo, hi]} for k, (m, lo, hi) in self.deltas.items()},
            "judge": {
                "verdicts": self.judge,
                "candidate_preferred": rate(self.candidate_preferred),
                "rationales": self.judge_rationales[:20],
            },
            "traces": self.traces,
        }


def build_report(stores: Stores, name: str) -> Report:
    """The report of the named run in these stores (KeyError when there is none)."""
    runs = stores.open_replay_runs()
    try:
        return report_of(runs, stores.replay, name)
    finally:
        runs.close()


def report_of(runs: ReplayRunRepository, selection: ReplaySelection, name: str) -> Report:
    """The report of the named run, from its stored items and from the record (KeyError when there is none)."""
    run = runs.load(name)
    if run is None:
        raise KeyError(f"no replay named {name!r}")
    report = Report(name, run.target, {})
    deltas: dict[str, list[float]] = {"input_tokens": [], "output_tokens": [], "latency_ms": [], "cost_usd": []}
    for item in runs.items(name):
        trace_id, status, doc = item.trace_id, item.status, item.result
        report.items[status] = report.items.get(status, 0) + 1
        if status != "done":
            report.traces.append({"trace_id": trace_id, "status": status, **doc})
            continue
        turns = doc.get("turns", [])
        report.diverged.n += 1
        report.diverged.hits += doc.get("diverged_at") is not None
        exact_all = True
        for t in turns:
            report.exact.n += 1  # a turn the candidate failed to answer counts, as a miss
            if not t.get("ok"):
                report.failed_turns += 1
                exact_all = False
                continue
            report.exact.hits += bool(t.get("exact"))
            exact_all &= bool(t.get("exact"))
            if t.get("tool_agreement") is not None:
                report.tool_agreement.n += 1
                report.tool_agreement.hits += bool(t["tool_agreement"])
            if t.get("schema_valid") is not None:
                report.schema_valid.n += 1
                report.schema_valid.hits += bool(t["schema_valid"])
            key = f"{t.get('recorded_finish')} -> {t.get('finish')}"
            report.finish_reasons[key] = report.finish_reasons.get(key, 0) + 1
            if isinstance(t.get("judge"), dict):
                pref = str(t["judge"].get("preference"))
                report.judge[pref] = report.judge.get(pref, 0) + 1
                if t["judge"].get("rationale"):
                    report.judge_rationales.append(f"{pref}: {t['judge']['rationale']}")
            for p in t.get("dropped_params") or []:
                report.dropped_params[p] = report.dropped_params.get(p, 0) + 1
            for k, rec in (
                ("input_tokens", "recorded_input_tokens"),
                ("output_tokens", "recorded_output_tokens"),
                ("cost_usd", "recorded_cost_usd"),
            ):
                if t.get(k) is not None and t.get(rec) is not None:
                    deltas[k].append(float(t[k]) - float(t[rec]))
        report.traces.append(
            {
                "trace_id": trace_id,
                "status": status,
                "turns": len(turns),
                "diverged_at": doc.get("diverged_at"),
                "exact": exact_all,
                "replay_trace_id": doc.get("replay_trace_id"),
            }
        )
    deltas["latency_ms"], report.tool_results_identical = _from_the_record(selection, name)
    report.deltas = {k: mean_ci(v) for k, v in deltas.items()}
    return report


def _tool_results(raw: bytes | None) -> list[tuple[Any, Any]]:
    try:
        body = orjson.loads(raw or b"")
    except orjson.JSONDecodeError:
        return []
    return (
        [
            (m.get("tool_call_id"), m.get("content"))
            for m in (body.get("messages") or [])
            if isinstance(m, dict) and m.get("role") == "tool"
        ]
        if isinstance(body, dict)
        else []
    )


def _from_the_record(selection: ReplaySelection, name: str) -> tuple[list[float], Rate]:
    """What the record says of the replay, independently of the runner: each replayed call's duration
    against its original's (both measured by the gateway, the same way), and whether the tool results in
    the bytes the candidate was sent equal those in the bytes the original model was sent."""
    pairs = selection.recorded_pairs(name)
    latency = [p.replay_ms - p.original_ms for p in pairs if p.replay_ms is not None and p.original_ms is not None]
    digests = [d for p in pairs for d in (p.replay_request, p.original_request) if d]
    found = selection.payloads(digests).get_many(digests)
    identical = Rate(0, 0)
    for p in pairs:
        original_raw = found.get(p.original_request or "")
        original = _tool_results(original_raw if isinstance(original_raw, bytes) else None)
        if original:
            sent = found.get(p.replay_request or "")
            identical.n += 1
            identical.hits += isinstance(sent, bytes) and _tool_results(sent) == original
    return latency, identical


def _fmt_delta(value: tuple[float, float, float], unit: str) -> str:
    mean, lo, hi = value
    if math.isnan(mean):
        return "—"
    return f"{mean:+.1f}{unit} [{lo:+.1f}, {hi:+.1f}]"


def _fmt_cost(value: tuple[float, float, float]) -> str:
    mean, lo, hi = value
    if math.isnan(mean):
        return "— (no price configured for both models)"
    return f"{mean:+.6f} [{lo:+.6f}, {hi:+.6f}]"


def summary_rows(report: Report) -> list[tuple[str, str]]:
    return [
        ("traces", ", ".join(f"{k} {v}" for k, v in sorted(report.items.items()))),
        ("exact match (per turn)", report.exact.text()),
        ("tool-call agreement (per turn)", report.tool_agreement.text()),
        ("structured output valid", report.schema_valid.text()),
        ("traces that diverged", report.diverged.text()),
        ("tool results the candidate was sent, equal to the record", report.tool_results_identical.text()),
        ("failed turns", str(report.failed_turns)),
        ("Δ input tokens (mean, 95% CI)", _fmt_delta(report.deltas["input_tokens"], "")),
        ("Δ output tokens (mean, 95% CI)", _fmt_delta(report.deltas["output_tokens"], "")),
        ("Δ latency (mean, 95% CI)", _fmt_delta(report.deltas["latency_ms"], " ms")),
        ("Δ cost per call, USD (mean, 95% CI)", _fmt_cost(report.deltas["cost_usd"])),
        (
            "finish reasons (recorded -> candidate)",
            ", ".join(f"{k}: {v}" for k, v in sorted(report.finish_reasons.items())),
        ),
        (
            "judge: candidate preferred (decisive verdicts)",
            report.candidate_preferred.text() if report.judge else "no judge configured (replay.judge)",
        ),
        ("judge verdicts", ", ".join(f"{k}: {v}" for k, v in sorted(report.judge.items())) or "—"),
        (
            "parameters removed for the candidate",
            ", ".join(f"{k}: {v}" for k, v in report.dropped_params.items()) or "none",
        ),
    ]


def to_html(report: Report) -> str:
    """A self-contained page: no scripts, no external styles or fonts."""
    esc = html.escape
    rows = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in summary_rows(report))
    traces = "".join(
        f"<tr><td>{esc(t['trace_id'])}</td><td>{esc(str(t.get('status')))}</td><td>{esc(str(t.get('turns', '')))}</td>"
        f"<td>{esc(str(t.get('diverged_at')))}</td><td>{esc(str(t.get('exact', '')))}</td>"
        f"<td>{esc(str(t.get('reason', '')))}</td></tr>"
        for t in report.traces
    )
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>Airlock replay "
        f"{esc(report.name)}</title><style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}</style></head><body>"
        f"<h1>Replay {esc(report.name)} against {esc(report.target)}</h1><table>{rows}</table>"
        "<h2>Traces</h2><table><tr><th>trace</th><th>status</th><th>turns</th><th>diverged at turn</th>"
        f"<th>exact</th><th>reason</th></tr>{traces}</table></body></html>"
    )
