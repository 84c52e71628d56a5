"""The sampler core: unbiased estimates per key, every error kept, bounded memory, early decisions."""

from __future__ import annotations

import random
import tracemalloc
from collections import defaultdict

import pytest

from airlock.config.schema import CostlyPolicy, Sampling, SlowPolicy
from airlock.sampling import Decision, Sampler, SpanFacts

SEC = 10**9


def span(trace_id: str, key: str, t_ns: int, status: str = "ok", root: bool = True, dur_ms: float = 20.0) -> SpanFacts:
    return SpanFacts(
        trace_id=trace_id,
        is_root=root,
        start_ns=t_ns,
        end_ns=t_ns + int(dur_ms * 1e6),
        status=status,
        key=key,
        signature=key,
        input_tokens=100,
        output_tokens=20,
    )


def run_traffic(sampler: Sampler, per_hour: dict[str, int], hours: float, seed: int, error_share: float = 0.0):
    """Traces of one span each, keyed, arriving over `hours` of trace time; decided every 5 s."""
    rng = random.Random(seed)
    decisions: list[Decision] = []
    truth: dict[str, int] = defaultdict(int)
    errors: set[str] = set()
    step_s = 5
    t0 = 1_700_000_000 * SEC
    for step in range(int(hours * 3600 / step_s)):
        now = t0 + step * step_s * SEC
        for key, rate in per_hour.items():
            expected = rate * step_s / 3600
            n = int(expected) + (rng.random() < expected - int(expected))
            for _ in range(n):
                tid = f"{rng.getrandbits(128):032x}"
                status = "error" if rng.random() < error_share else "ok"
                if status == "error":
                    errors.add(tid)
                sampler.add(span(tid, key, now, status, dur_ms=rng.uniform(5, 50)), now)
                truth[key] += 1
        decisions += sampler.decide(now + SEC)
    decisions += sampler.decide(t0 + int(hours * 3600 + 60) * SEC, flush=True)
    return decisions, truth, errors


def test_estimates_from_kept_traces_are_within_5_percent_per_key_at_rates_1_in_10_to_1_in_1000() -> None:
    # Only the rate policy and "rare" here: a p99 "slow" policy alone would keep 1% of everything.
    cfg = Sampling(
        enabled=True,
        span_budget_per_hour=350,
        seed=7,
        slow=SlowPolicy(quantile=None),
        costly=CostlyPolicy(quantile=None),
    )
    sampler = Sampler(cfg)
    volumes = {"busy": 100_000, "medium": 10_000, "quiet": 1_000, "rare": 100}
    decisions, truth, _ = run_traffic(sampler, volumes, hours=2, seed=11)
    rates = {k: sampler.rates.probability(k) for k in volumes}
    assert rates["busy"] <= 1 / 900 and 1 / 20 <= rates["quiet"] <= 1 / 5, rates  # the range asked for
    estimated: dict[str, float] = defaultdict(float)
    for d in decisions:
        estimated[d.key] += d.adjusted_count
    for key, n in truth.items():
        assert abs(estimated[key] - n) <= 0.05 * n, (key, estimated[key], n, rates)
    kept = sum(d.keep for d in decisions)
    assert kept < 0.01 * sum(truth.values())  # it did sample: the budget holds
    # every trace was decided exactly once, kept or dropped, and the totals are exact
    assert sum(d.traces for d in decisions) == sum(truth.values())
    assert len({d.trace_id for d in decisions}) == len(decisions)


def test_every_error_trace_is_kept_at_rate_one() -> None:
    sampler = Sampler(Sampling(enabled=True, span_budget_per_hour=50, seed=3))
    decisions, _, errors = run_traffic(sampler, {"a": 20_000, "b": 2_000}, hours=0.5, seed=5, error_share=0.01)
    assert len(errors) > 50
    by_id = {d.trace_id: d for d in decisions}
    for tid in errors:
        assert by_id[tid].keep and by_id[tid].reason == "error" and by_id[tid].adjusted_count == 1.0
    assert sum(d.keep and d.reason == "rate" for d in decisions) < 0.05 * len(decisions)


def test_a_trace_waits_for_its_root_or_the_decision_wait() -> None:
    sampler = Sampler(Sampling(enabled=True, decision_wait_s=30))
    t = 1_700_000_000 * SEC
    sampler.add(span("child", "k", t, root=False), t)
    assert sampler.decide(t + 10 * SEC) == []
    sampler.add(span("child", "k", t + SEC, root=False), t + SEC)
    assert [d.spans for d in sampler.decide(t + 40 * SEC)] == [2]
    sampler.add(span("rooted", "k", t, root=False), t)
    sampler.add(span("rooted", "k", t, root=True), t)
    assert [d.trace_id for d in sampler.decide(t + SEC)] == ["rooted"]
    # a span that comes after its trace was decided follows the decision, and still counts
    sampler.add(span("rooted", "k", t + 2 * SEC, root=False), t + 2 * SEC)
    late = sampler.decide(t + 3 * SEC)
    assert [(d.trace_id, d.traces, d.spans) for d in late] == [("rooted", 0, 1)]


def test_memory_stays_bounded_under_one_trace_of_100_000_spans() -> None:
    cfg = Sampling(enabled=True, max_spans_per_trace=10_000)
    sampler = Sampler(cfg)
    t = 1_700_000_000 * SEC
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        decisions: list[Decision] = []
        for i in range(100_000):
            sampler.add(span("giant", "k", t + i, root=False), t + i)
            if i % 1000 == 999:  # a pass every 1,000 spans
                decisions += sampler.decide(t + i)
        decisions += sampler.decide(t + 100_000, flush=True)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000, peak  # bytes; 100,000 buffered spans would take well over 10 MB
    assert len(sampler.pending) == 0
    first = decisions[0]
    assert first.early == "spans" and first.traces == 1 and first.spans == 10_000
    assert sum(d.spans for d in decisions) == 100_000  # the rest follow as late additions
    assert sum(d.traces for d in decisions) == 1


def test_too_many_waiting_traces_are_decided_early_oldest_first() -> None:
    sampler = Sampler(Sampling(enabled=True, max_pending_traces=100, decision_wait_s=3600))
    t = 1_700_000_000 * SEC
    for i in range(150):
        sampler.add(span(f"t{i:03d}", "k", t + i, root=False), t + i)
        assert len(sampler.pending) <= 100  # between passes too: a burst cannot grow it
    decided = sampler.decide(t + 200)
    assert len(decided) == 50 and {d.early for d in decided} == {"pending"}
    assert {d.trace_id for d in decided} == {f"t{i:03d}" for i in range(50)}


def _rate_only() -> Sampling:
    """Only the per-key rate under a small budget: no rare, slow or costly policy keeps anything."""
    return Sampling.model_validate(
        {
            "enabled": True,
            "span_budget_per_hour": 1000,
            "decision_wait_s": 30,
            "rare": {"enabled": False},
            "slow": {"quantile": None},
            "costly": {"quantile": None},
        }
    )


def test_a_late_error_keeps_a_trace_that_was_dropped() -> None:
    """Regression: a trace dropped before its error span arrived (an agent pausing past the decision
    wait) stayed dropped, error and all. Every error trace is kept: the late part is kept as an error."""
    sampler = Sampler(_rate_only())
    t = 10**18
    for i in range(20000):  # enough traffic on the key that its rate falls well below 1
        sampler.add(span(f"{i:032x}", "k", t + i * 10**6), t)
    sampler.decide(t + SEC)
    for j in range(20):
        sampler.add(span(f"{j:02x}" * 16, "k", t + 2 * SEC, root=False), t + 2 * SEC)
    dropped = [d.trace_id for d in sampler.decide(t + 40 * SEC) if not d.keep]
    assert dropped
    late = dropped[0]
    sampler.add(span(late, "k", t + 45 * SEC, status="error", root=False), t + 45 * SEC)
    sampler.add(span(late, "k", t + 46 * SEC, root=False), t + 46 * SEC)  # and what follows the error
    decisions = [d for d in sampler.decide(t + 90 * SEC) if d.trace_id == late]
    assert [(d.keep, d.reason, d.probability, d.traces, d.spans, d.errors) for d in decisions] == [
        (True, "error", 1.0, 0, 2, 1)
    ]
    # kept to be seen, but it stands for no traffic: the kept traces' adjusted counts already do
    assert decisions[0].adjusted_count == 0.0


def test_late_errors_on_every_trace_are_estimated_once() -> None:
    """Regression: keeping a dropped trace's late error at adjusted count 1 counted it twice (the kept
    traces' late errors, at 1/p, already stand for it): 20,000 late errors were estimated at 40,477."""
    sampler = Sampler(_rate_only())
    t, n = 10**18, 20000
    for i in range(n):
        sampler.add(span(f"{i:032x}", "k", t + i * 10**6), t)
    first = sampler.decide(t + SEC)
    for i in range(n):  # every trace's last step fails, after a pause longer than the decision wait
        sampler.add(span(f"{i:032x}", "k", t + 60 * SEC, status="error", root=False), t + 60 * SEC)
    late = sampler.decide(t + 120 * SEC)
    assert sum(d.adjusted_count * d.traces for d in first) == pytest.approx(n, rel=0.05)
    assert sum(d.adjusted_count * d.errors for d in first + late) == pytest.approx(n, rel=0.05)
    assert all(d.keep for d in late)  # and every error is kept
