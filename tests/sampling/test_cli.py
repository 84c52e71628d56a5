"""`airlock sample run|status|show|gc` on a real data directory."""

from __future__ import annotations

from pathlib import Path

import orjson
import yaml
from click.testing import CliRunner
from test_stage import config, write_traffic

from airlock.cli.main import cli
from airlock.store.embedded import DataDir, ParquetSegments


def test_sample_commands(tmp_path: Path) -> None:
    data = DataDir.at(tmp_path / "data")
    data.create()
    traces = write_traffic(data, ParquetSegments(data), 3, seed=9)
    cfg = config(tmp_path / "data", span_budget_per_hour=5000).model_dump(mode="json")
    path = tmp_path / "airlock.yaml"
    path.write_text(yaml.safe_dump(cfg))
    runner = CliRunner()

    ran = runner.invoke(cli, ["sample", "run", "-c", str(path), "--all"])
    assert ran.exit_code == 0, ran.output
    assert f"decided {len(traces)} traces" in ran.output and "0 still waiting" in ran.output
    again = runner.invoke(cli, ["sample", "run", "-c", str(path)])
    assert "read 0 spans" in again.output  # the cursor moved on

    status = runner.invoke(cli, ["sample", "status", "-c", str(path)])
    assert status.exit_code == 0, status.output
    assert "What was kept and why" in status.output and "busy|m" in status.output
    assert "span budget 5,000/hour" in status.output
    doc = orjson.loads(runner.invoke(cli, ["sample", "status", "-d", str(tmp_path / "data"), "--json"]).output)
    assert doc["totals"]["traces"][0] == len(traces)

    error_trace = next(t for t, err in traces.items() if err)
    shown = runner.invoke(cli, ["sample", "show", "-c", str(path), error_trace[:12]])
    assert shown.exit_code == 0, shown.output
    assert f"trace {error_trace}: kept (error)" in shown.output and "adjusted count 1" in shown.output
    missing = runner.invoke(cli, ["sample", "show", "-c", str(path), "ffffffffffff"])
    assert missing.exit_code == 2 and "0 decided traces match" in missing.output

    gc = runner.invoke(cli, ["sample", "gc", "-c", str(path)])
    assert gc.exit_code == 0 and "spans of dropped traces" in gc.output
