"""`airlock cost` and `airlock energy` on a real record: the table, CSV and JSON outputs, one task's
line items, the sampler fed from a recording, and usage errors."""

from __future__ import annotations

import csv
import io
import sys
from pathlib import Path

import orjson
from click.testing import CliRunner
from ledger_record import T0, config, hop, span, write_record

from airlock.cli.main import cli
from airlock.ledger import LedgerItems, LineItemIn
from airlock.store.embedded.energy import SQLiteEnergyReadings
from airlock.store.embedded.ledger import SQLiteLedgerItems

sys.path.insert(0, str(Path(__file__).parents[1] / "energy"))
from counter_trace import trace


def _record(tmp: Path) -> Path:
    calls = [
        span(1, **{"airlock.task": "t-1", "attributes": {"feature": "search"}}),
        span(2, status="error", **{"airlock.task": "t-2", "airlock.attempts": 2, "attributes": {"feature": "chat"}}),
    ]
    write_record(tmp / "data", calls, [hop(calls[1], 1, "up-a", "timeout"), hop(calls[1], 2, "up-b", "ok")])
    points = [{"batch": 1, "prefill_j_per_token": 0.1, "decode_j_per_token": 1.0}]
    cfg = config(
        tmp,
        ledger={"revenue_per_task": 0.01},
        energy={
            "profiles": [{"model": "m-large", "tier": "large", "points": points}],
            "gpus": [{"device": "gpu-0", "upstream": "up-a"}],
        },
    )
    store = SQLiteLedgerItems(Path(cfg.data_dir) / "state.sqlite3")
    review = LineItemIn(id="r-1", category="human_review", amount_usd=0.5, task="t-1")
    LedgerItems(store).add("acme", [review], now_ns=T0)
    store.close()
    return tmp / "airlock.yaml"


def test_cost_report_table_csv_and_json(tmp_path: Path) -> None:
    path = _record(tmp_path)
    runner = CliRunner()
    table = runner.invoke(cli, ["cost", "report", "-c", str(path), "--by", "feature", "--forecast-tasks", "100"])
    assert table.exit_code == 0, table.output
    assert "human_review" in table.output and "forecast at 100 tasks" in table.output
    assert "failed attempt" in table.output  # wasted spend is named
    as_csv = runner.invoke(cli, ["cost", "report", "-c", str(path), "--by", "feature", "--format", "csv"])
    rows = {r["feature"]: r for r in csv.DictReader(io.StringIO(as_csv.output))}
    assert float(rows["search"]["human_review_usd"]) == 0.5
    assert rows["chat"]["successful_tasks"] == "0" and float(rows["chat"]["wasted_failed_attempt_usd"]) > 0
    assert set(rows) == {"search", "chat", "(total)"}
    as_json = orjson.loads(runner.invoke(cli, ["cost", "report", "-c", str(path), "--format", "json"]).output)
    assert as_json["total"]["tasks"] == 2 and as_json["total"]["successful_tasks"] == 1
    # -d alone finds the airlock.yaml beside the data directory (where the demo writes it).
    beside = runner.invoke(cli, ["cost", "report", "-d", str(tmp_path / "data"), "--format", "json"])
    assert orjson.loads(beside.output)["total"] == as_json["total"]


def test_cost_task_lists_every_line(tmp_path: Path) -> None:
    path = _record(tmp_path)
    out = CliRunner().invoke(cli, ["cost", "task", "-c", str(path), "t-2", "--json"])
    lines = orjson.loads(out.output)
    assert sorted(line["source"] for line in lines) == ["hop", "span", "storage"]
    assert {line["wasted"] for line in lines if line["source"] != "storage"} == {"failed_attempt", "failed_request"}
    missing = CliRunner().invoke(cli, ["cost", "task", "-c", str(path), "t-9"])
    assert missing.exit_code == 2 and "no line items" in missing.output


def test_bad_options_are_usage_errors(tmp_path: Path) -> None:
    path = _record(tmp_path)
    runner = CliRunner()
    bad = runner.invoke(cli, ["cost", "report", "-c", str(path), "--by", "colour"])
    assert bad.exit_code == 2 and "choose from" in bad.output
    bad = runner.invoke(cli, ["energy", "report", "-c", str(path), "--by", "colour"])
    assert bad.exit_code == 2 and "choose from" in bad.output
    none = runner.invoke(cli, ["cost", "report", "-c", str(tmp_path / "nope.yaml")])
    assert none.exit_code == 2 and "--config" in none.output


def test_energy_sample_from_a_recording_then_report(tmp_path: Path) -> None:
    path = _record(tmp_path)
    s = span(1)
    readings = trace("gpu-0", [(s["start_ns"], s["end_ns"])], seconds=1.8)  # ends before span 2 starts
    recording = tmp_path / "gpu.jsonl"
    recording.write_bytes(
        b"\n".join(orjson.dumps({"device": r.device, "t_ns": r.t_ns, "energy_mj": r.energy_mj}) for r in readings)
    )
    runner = CliRunner()
    out = runner.invoke(cli, ["energy", "sample", "-c", str(path), "--recording", str(recording)])
    assert out.exit_code == 0, out.output
    assert f"stored {len(readings)} readings" in out.output
    store = SQLiteEnergyReadings(tmp_path / "data" / "state.sqlite3")
    assert len(store.of("gpu-0")) == len(readings)
    store.close()
    report = runner.invoke(cli, ["energy", "report", "-c", str(path), "--by", "source", "--format", "json"])
    doc = orjson.loads(report.output)
    assert {r["source"] for r in doc["rows"]} == {"measured", "profile"}  # span 2 starts after the trace ends
    (device,) = doc["devices"]
    assert abs(device["attributed_j"] + device["idle_j"] - device["read_j"]) < 1e-6
    table = runner.invoke(cli, ["energy", "report", "-c", str(path)])
    assert table.exit_code == 0 and "read" in table.output and "tokens/J" in table.output
    assert "ML.ENERGY" in runner.invoke(cli, ["energy", "presets"]).output


def test_another_tenants_items_stay_on_their_own_bill(tmp_path: Path) -> None:
    """Regression: items globex stored naming acme's trace and task (posted before acme's spans were
    written, or before POST refused them) were listed by `cost task` in acme's task, and the one naming
    acme's trace took acme's task and feature. They now stay globex's own, under globex's name."""
    trace = "ab" * 16
    write_record(
        tmp_path / "data", [span(1, trace_id=trace, **{"airlock.task": "t-1", "attributes": {"feature": "search"}})]
    )
    cfg = config(tmp_path)
    store = SQLiteLedgerItems(Path(cfg.data_dir) / "state.sqlite3")
    LedgerItems(store).add(
        "globex",
        [
            LineItemIn(id="evil-1", category="human_review", amount_usd=4000.0, task="t-1"),
            LineItemIn(id="evil-2", category="tool", amount_usd=777.0, trace_id=trace),
        ],
        now_ns=T0 + 5 * 10**9,
    )
    store.close()
    path = tmp_path / "airlock.yaml"
    runner = CliRunner()
    for task in ("t-1", trace):
        out = runner.invoke(cli, ["cost", "task", "-c", str(path), task, "--json"])
        assert out.exit_code == 0, out.output
        lines = orjson.loads(out.output)
        assert lines and {line["tenant"] for line in lines} == {"acme"}, task
        assert {line["source"] for line in lines} == {"span", "storage"}
    theirs = orjson.loads(
        runner.invoke(cli, ["cost", "task", "-c", str(path), "t-1", "--tenant", "globex", "--json"]).output
    )
    assert [(line["source"], line["usd"]) for line in theirs] == [("item", 4000.0)]
    report = orjson.loads(
        runner.invoke(cli, ["cost", "report", "-c", str(path), "--by", "tenant,feature", "--format", "json"]).output
    )
    rows = {(r["key"]["tenant"], r["key"]["feature"]): r for r in report["rows"]}
    assert rows[("acme", "search")]["total_usd"] < 1
    assert ("globex", "search") not in rows  # acme's feature is not lent to globex's items
    assert rows[("globex", "(none)")]["total_usd"] == 4777.0
