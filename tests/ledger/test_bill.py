"""The bill computed from a real record (Parquet segments read by DuckDB, items in SQLite)."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from ledger_record import DAY, T0, config, hop, span, write_record

from airlock.config.schema import Price
from airlock.ledger import LedgerItems, LineItemIn, build_bill, call_cost, cost_report, price_in_effect
from airlock.store.embedded.ledger import ROW_BYTES, SQLiteLedgerItems, data_dir_bytes


def utc_day(ns: int) -> date:
    return datetime.fromtimestamp(ns // 10**9, tz=UTC).date()


def bill_storage(cfg: object) -> dict[str, float]:
    bill = build_bill(cfg)  # type: ignore[arg-type]
    try:
        rows = [line for line in bill.lines() if line["category"] == "telemetry_storage"]
    finally:
        bill.close()
    return {r["span_id"]: r["usd"] for r in rows}


def _usd(tmp: Path, **sections: object) -> dict[str, float]:
    bill = build_bill(config(tmp, **sections))
    try:
        rows = [line for line in bill.lines() if line["source"] in ("span", "hop")]
    finally:
        bill.close()
    return {f"{r['source']}:{r['span_id']}": r["usd"] for r in rows}


def test_every_part_of_usage_is_priced_as_the_reference_does(tmp_path: Path) -> None:
    """Cached reads, cache writes and reasoning tokens priced apart, for many random calls: the bill's
    SQL and call_cost agree to the cent's millionth."""
    price = {
        "input_per_mtok": 3.0,
        "output_per_mtok": 15.0,
        "cached_read_per_mtok": 0.3,
        "cache_write_per_mtok": 3.75,
        "reasoning_per_mtok": 12.0,
        "per_request": 0.0001,
    }
    rng = random.Random(5)
    spans = []
    for n in range(200):
        inp = rng.randint(0, 50_000)
        out = rng.randint(0, 4_000)
        spans.append(
            span(
                n,
                **{
                    "gen_ai.usage.input_tokens": inp,
                    "gen_ai.usage.output_tokens": out,
                    "gen_ai.usage.cache_read.input_tokens": rng.choice([None, rng.randint(0, inp + 10)]),
                    "gen_ai.usage.cache_creation.input_tokens": rng.choice([None, rng.randint(0, inp)]),
                    "airlock.usage.reasoning_tokens": rng.choice([None, rng.randint(0, out + 10)]),
                    "airlock.request.stream": n % 2 == 0,
                },
            )
        )
    write_record(tmp_path / "data", spans)
    cfg = config(tmp_path)
    upstreams = [u.model_dump() for u in cfg.upstreams]
    upstreams[0]["models"][0]["prices"] = [price]
    got = _usd(tmp_path, upstreams=upstreams)
    p = Price(**price)
    for s in spans:
        expected = call_cost(
            p,
            s["gen_ai.usage.input_tokens"],
            s["gen_ai.usage.output_tokens"],
            s["gen_ai.usage.cache_read.input_tokens"],
            s["airlock.usage.reasoning_tokens"],
            s["gen_ai.usage.cache_creation.input_tokens"],
        )
        assert got[f"span:{s['span_id']}"] == pytest.approx(expected, rel=1e-12), s


def test_old_spans_keep_the_price_they_were_served_at(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    upstreams = [u.model_dump() for u in cfg.upstreams]
    day1 = utc_day(T0 + DAY)
    upstreams[0]["models"][0]["prices"] = [
        {"input_per_mtok": 1.0, "output_per_mtok": 0.0},
        {"input_per_mtok": 5.0, "output_per_mtok": 0.0, "effective_from": day1.isoformat()},
    ]
    before = span(1, start_ns=T0)
    after = span(2, start_ns=T0 + 2 * DAY)
    write_record(tmp_path / "data", [before, after])
    got = _usd(tmp_path, upstreams=upstreams)
    assert got[f"span:{before['span_id']}"] == pytest.approx(1000 * 1.0 / 1e6)
    assert got[f"span:{after['span_id']}"] == pytest.approx(1000 * 5.0 / 1e6)


def test_no_reported_usage_is_priced_from_local_counts_and_flagged(tmp_path: Path) -> None:
    s = span(1, **{"gen_ai.usage.input_tokens": None, "gen_ai.usage.output_tokens": None})
    write_record(tmp_path / "data", [s])
    bill = build_bill(config(tmp_path))
    try:
        (line,) = [line for line in bill.lines() if line["source"] == "span"]
    finally:
        bill.close()
    assert line["estimated"] is True
    assert line["usd"] == pytest.approx((990 * 1.0 + 101 * 2.0) / 1e6)


def test_failover_prices_the_answering_upstream_and_bills_timeouts_as_waste(tmp_path: Path) -> None:
    """The span answered on up-b (under its own model name); the timed-out attempt on up-a is billed for
    its input, the refused one (5xx) is not, unless configured."""
    served = span(1, **{"airlock.upstream": "up-b", "airlock.upstream.model": "m-large-v2", "airlock.attempts": 3})
    hops = [hop(served, 1, "up-a", "timeout"), hop(served, 2, "up-a", "http_5xx"), hop(served, 3, "up-b", "ok")]
    write_record(tmp_path / "data", [served], hops)
    got = _usd(tmp_path)
    assert got == {
        f"span:{served['span_id']}": pytest.approx((1000 + 200) / 1e6),
        f"hop:{served['span_id']}": pytest.approx(990 / 1e6),
    }
    report = cost_report(config(tmp_path, ledger={"failed_attempts_billed": ["timeout", "http_5xx"]}), [])
    assert report.total.wasted_usd == {"failed_attempt": pytest.approx(2 * 990 / 1e6)}


def test_failed_and_abandoned_calls_are_wasted_spend(tmp_path: Path) -> None:
    ok = span(1)
    failed = span(2, status="error", **{"gen_ai.usage.input_tokens": None, "gen_ai.usage.output_tokens": None})
    abandoned = span(
        3,
        status="cancelled",
        **{"airlock.request.stream": True, "gen_ai.usage.input_tokens": None, "gen_ai.usage.output_tokens": None},
    )
    rejected = span(4, status="error", kind="gateway.reject", **{"airlock.upstream": None})
    write_record(tmp_path / "data", [ok, failed, abandoned, rejected])
    report = cost_report(config(tmp_path), [])
    local = (990 + 101 * 2) / 1e6
    assert report.total.wasted_usd == {
        "failed_request": pytest.approx(local),
        "abandoned_stream": pytest.approx(local),
    }
    # The rejected call reached no model: no inference line, but its record is stored, so it is a task
    # (a failed one) that cost its storage.
    bill = build_bill(config(tmp_path))
    try:
        lines = [line for line in bill.lines() if line["span_id"] == rejected["span_id"]]
    finally:
        bill.close()
    assert [line["category"] for line in lines] == ["telemetry_storage"]
    assert (report.total.tasks, report.total.successful_tasks) == (4, 1)


def test_a_task_bill_joins_posted_items_span_attributes_and_storage(tmp_path: Path) -> None:
    trace = "ab" * 16
    calls = [
        span(1, trace_id=trace, **{"airlock.task": "t-1", "attributes": {"feature": "search"}}),
        span(
            2,
            trace_id=trace,
            **{"airlock.task": "t-1", "attributes": {"feature": "search", "airlock.cost.tool": "0.02"}},
        ),
        span(
            3,
            **{
                "airlock.task": "t-2",
                "airlock.tenant": "globex",
                # a client's header is no price: negative, NaN, infinite or absurd amounts are no line at all
                "attributes": {
                    "feature": "chat",
                    "airlock.cost.lunch": "1.5",
                    "airlock.cost.tool": "-1",
                    "airlock.cost.api": "nan",
                    "airlock.cost.vector_db": "inf",
                    "airlock.cost.embeddings": "1e300",
                },
            },
        ),
    ]
    write_record(tmp_path / "data", calls)
    cfg = config(tmp_path, ledger={"revenue_per_task": 0.10, "revenue_per_task_by_feature": {"chat": 0.01}})
    store = SQLiteLedgerItems(Path(cfg.data_dir) / "state.sqlite3")
    LedgerItems(store).add(
        "acme",
        [
            LineItemIn(id="vq-1", category="vector_db", quantity=40, unit_price_usd=0.0005, trace_id=trace),
            LineItemIn(id="hr-1", category="human_review", amount_usd=0.25, task="t-1"),
        ],
        now_ns=T0 + 5 * 10**9,
    )
    store.close()
    report = cost_report(cfg, ["tenant", "feature"], forecast_tasks=1000)
    rows = {(r.key["tenant"], r.key["feature"]): r for r in report.rows}
    search = rows[("acme", "search")]
    assert search.by_category["vector_db"] == pytest.approx(0.02)
    assert search.by_category["human_review"] == pytest.approx(0.25)
    assert search.by_category["tool"] == pytest.approx(0.02)
    assert search.by_category["inference"] == pytest.approx(2 * 1200 / 1e6)
    assert search.inference_share < 0.01
    assert search.tasks == 1 and search.cost_per_successful_task == pytest.approx(search.total_usd)
    assert search.revenue_usd == pytest.approx(0.10)
    assert rows[("globex", "chat")].revenue_usd == pytest.approx(0.01)
    # An unknown category in an attribute is "other"; a negative amount is no line at all.
    assert rows[("globex", "chat")].by_category.keys() == {"inference", "other", "telemetry_storage"}
    assert rows[("globex", "chat")].by_category["other"] == pytest.approx(1.5)
    # Storage: everything the data directory holds, spread over its spans, priced for 30 days.
    held = report.held_bytes
    assert held == data_dir_bytes(Path(cfg.data_dir)) > 0
    storage = report.total.by_category["telemetry_storage"]
    assert storage == pytest.approx(held / 2**30 * 0.10)
    per_span = bill_storage(cfg)
    weights = {s["span_id"]: ROW_BYTES for s in calls}  # these spans carry no payload bytes
    assert per_span == pytest.approx({k: storage * w / sum(weights.values()) for k, w in weights.items()})
    assert report.forecast is not None
    assert report.forecast.total_usd == pytest.approx(report.total.total_usd / 2 * 1000)


def test_an_embedding_is_priced_on_its_input_and_groups_by_day(tmp_path: Path) -> None:
    emb = span(
        1,
        kind="model.embedding",
        **{"gen_ai.usage.output_tokens": None, "airlock.local.output_tokens": None, "airlock.usage.reported": True},
    )
    later = span(2, start_ns=T0 + DAY)
    write_record(tmp_path / "data", [emb, later])
    report = cost_report(config(tmp_path), ["day", "category"])
    got = {(r.key["day"], r.key["category"]): r.total_usd for r in report.rows}
    day0 = "2026-05-28"  # T0 is 2026-05-28 20:26 UTC
    assert got[(day0, "embeddings")] == pytest.approx(1000 / 1e6)
    assert got[("2026-05-29", "inference")] == pytest.approx(1200 / 1e6)
    assert report.total.estimated_usd == pytest.approx(report.total.by_category["telemetry_storage"])


def test_a_price_change_applies_from_midnight_utc_of_its_day(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    upstreams = [u.model_dump() for u in cfg.upstreams]
    midnight = (T0 // DAY + 1) * DAY  # the UTC midnight after T0
    day = utc_day(midnight)
    upstreams[0]["models"][0]["prices"] = [
        {"input_per_mtok": 1.0, "output_per_mtok": 0.0, "effective_from": day.isoformat()},
        {"input_per_mtok": 7.0, "output_per_mtok": 0.0},  # no date: in effect since always
    ]
    before, at = span(1, start_ns=midnight - 1), span(2, start_ns=midnight)
    write_record(tmp_path / "data", [before, at])
    got = _usd(tmp_path, upstreams=upstreams)
    assert got[f"span:{before['span_id']}"] == pytest.approx(7000 / 1e6)
    assert got[f"span:{at['span_id']}"] == pytest.approx(1000 / 1e6)
    spec = config(tmp_path, upstreams=upstreams).upstreams[0].models[0]
    assert price_in_effect(spec, utc_day(midnight - 1)).input_per_mtok == 7.0  # the reference


def test_electricity_is_a_line_item_for_upstreams_you_run(tmp_path: Path) -> None:
    """up-a is self-hosted: its calls' energy (from the profile, PUE included) is billed at the configured
    price per kWh; up-b is a public cloud API whose price already includes it."""
    cfg = config(tmp_path)
    upstreams = [u.model_dump() for u in cfg.upstreams]
    upstreams[0]["deployment"] = "self_hosted"
    upstreams[1]["deployment"] = "public_cloud"
    points = [{"batch": 1, "prefill_j_per_token": 0.5, "decode_j_per_token": 2.0}]
    own = span(1, start_ns=T0, end_ns=T0 + 10**9)
    hosted = span(2, start_ns=T0 + 100 * 10**9, **{"airlock.upstream": "up-b", "airlock.upstream.model": "m-large-v2"})
    write_record(tmp_path / "data", [own, hosted])
    cfg = config(
        tmp_path,
        upstreams=upstreams,
        ledger={"electricity": {"usd_per_kwh": 0.20}},
        energy={"profiles": [{"model": "m-large", "points": points, "idle_share": 0.2, "pue": 1.25}]},
    )
    bill = build_bill(cfg)
    try:
        lines = [
            {k: line[k] for k in ("span_id", "usd", "estimated")}
            for line in bill.lines()
            if line["category"] == "electricity"
        ]
    finally:
        bill.close()
    joules = (0.5 * 1000 + 2.0 * 100) / 0.8 * 1.25
    assert lines == [{"span_id": own["span_id"], "usd": pytest.approx(joules / 3.6e6 * 0.20), "estimated": True}]


def _aliased_config(tmp: Path, **sections: object) -> object:
    """up-a serves m-large, and m-mini, which it knows by the upstream name m-large too (a cheaper tier
    of the same deployment, say); a route 'mini' sends to m-mini."""
    cfg = config(tmp)
    upstreams = [u.model_dump() for u in cfg.upstreams]
    mini = {"name": "m-mini", "upstream_model": "m-large", "prices": [{"input_per_mtok": 0.1, "output_per_mtok": 0.2}]}
    upstreams[0]["models"].append(mini)
    routes = [
        *[r.model_dump() for r in cfg.routes],
        {"alias": "mini", "targets": [{"upstream": "up-a", "model": "m-mini"}]},
    ]
    return config(tmp, upstreams=upstreams, routes=routes, **sections)


def aliased_calls() -> list[dict[str, object]]:
    """m-large called directly, m-mini called directly and through its alias: all sent upstream as m-large."""
    return [
        span(1, **{"airlock.route": "m-large", "gen_ai.request.model": "m-large"}),
        span(2, **{"airlock.route": "m-mini", "gen_ai.request.model": "m-mini"}),
        span(3, **{"airlock.route": "mini", "gen_ai.request.model": "mini"}),
    ]


def test_an_aliased_model_is_priced_from_its_own_entry(tmp_path: Path) -> None:
    """Regression: a model with upstream_model was priced from the entry of the model named like its
    upstream name (m-mini at m-large's price), as if it were that model."""
    write_record(tmp_path / "data", aliased_calls())
    report = cost_report(_aliased_config(tmp_path), ["model"])  # type: ignore[arg-type]
    inference = {r.key["model"]: r.by_category["inference"] for r in report.rows}
    assert inference["m-large"] == pytest.approx((1000 * 1.0 + 100 * 2.0) / 1e6)
    assert inference["m-mini"] == pytest.approx(2 * (1000 * 0.1 + 100 * 0.2) / 1e6)
    assert report.unpriced == []
