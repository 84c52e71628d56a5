"""Each keep policy, from span rows as the record holds them (FactReader) to the sampler's reason."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
from test_stage import T0, config

from airlock.sampling import Sampler
from airlock.sampling.reading import FactReader
from airlock.sampling.service import take_sampler_lock
from airlock.store.embedded import DataDir


def row(trace: str, **extra: Any) -> dict[str, Any]:
    base = {
        "trace_id": trace,
        "parent_span_id": None,
        "start_ns": T0,
        "end_ns": T0 + 10**7,
        "status": "ok",
        "airlock.tenant": "acme",
        "gen_ai.request.model": "m",
        "airlock.upstream": "up",
        "gen_ai.usage.input_tokens": 100,
        "gen_ai.usage.output_tokens": 10,
        "attributes": [("feature", "search")],
    }
    return {**base, **extra}


def test_each_policy_keeps_its_traces_with_its_reason(tmp_path: Path) -> None:
    cfg = config(
        tmp_path,
        span_budget_per_hour=1,  # the rate policy keeps (almost) nothing: what is kept, a policy kept
        slow={"over_ms": 1000, "quantile": None},
        costly={"over_usd": 0.5, "quantile": None},
        rare={"enabled": False},
    )
    reader = FactReader(cfg)
    rows = {
        "denied": row("a" * 32, **{"airlock.decisions": orjson.dumps([{"kind": "tool", "verdict": "deny"}]).decode()}),
        "failed_eval": row("b" * 32, attributes=[("eval.result", "fail")]),
        "judged": row("c" * 32, **{"airlock.decisions": '[{"kind": "judge", "verdict": "failed"}]'}),
        "slow": row("d" * 32, end_ns=T0 + 2 * 10**9),
        "costly": row("e" * 32, **{"gen_ai.usage.input_tokens": 1_000_000}),  # $1 at $1/Mtok
        "error": row("f" * 32, status="error"),
        "replay": row("9" * 32, **{"airlock.replay.run": "try-1"}),
    }
    sampler = Sampler(cfg.sampling)
    for r in rows.values():
        sampler.add(reader.facts(r), T0)
    for i in range(200):  # ordinary traffic, to be sampled down
        sampler.add(reader.facts(row(f"{i:032x}")), T0)
    decided = {d.trace_id: d for d in sampler.decide(T0 + 10**12)}
    for want, r in rows.items():
        d = decided[r["trace_id"]]
        assert d.keep and d.reason == ("failed_eval" if want == "judged" else want) and d.probability == 1.0
    ordinary = [d for tid, d in decided.items() if tid not in {r["trace_id"] for r in rows.values()}]
    assert sum(d.keep for d in ordinary) < 20 and {d.reason for d in ordinary} == {"rate"}
    assert abs(decided["e" * 32].cost_usd - (1.0 + 10 * 2.0 / 1e6)) < 1e-9  # priced from the config


def test_keys_and_signatures_come_from_columns_or_free_attributes(tmp_path: Path) -> None:
    cfg = config(tmp_path, key=["airlock.tenant", "locale"], rare={"attributes": ["locale"]})
    facts = FactReader(cfg).facts(row("1" * 32, attributes=[("locale", "ja-JP"), ("user", "u-17")]))
    assert facts.key == "acme|ja-JP"
    assert facts.signature == "acme|ja-JP|locale=ja-JP"  # only the named attributes: a user id is not a shape


def test_one_process_runs_the_sampler_per_data_directory(tmp_path: Path) -> None:
    data = DataDir.at(tmp_path)
    first = take_sampler_lock(data)
    assert first is not None
    assert take_sampler_lock(data) is None
    first.release()
    again = take_sampler_lock(data)
    assert again is not None
    again.release()
