"""A simulated upstream that bills with another tokenizer than the local one: the drift figures must
match a direct computation with both tokenizers, and the wrong mapping must stand out on CJK text."""

from __future__ import annotations

import statistics
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from airlock.cli.main import cli
from airlock.store.embedded import DataDir, DuckDBSpanReader
from airlock.tokens import get_tokenizer
from airlock.tokens.chat import count_request
from airlock.tokens.drift import drift_cells
from helpers import API_KEY, Gateway, Sim, wait_recorded, write_config
from tokens.texts import SCRIPT_OF, TEXTS

LANGS = ("English", "Japanese", "Russian", "Korean")


def bodies() -> Iterator[tuple[str, dict]]:
    for lang in LANGS:
        for i in range(12):
            text = TEXTS[lang][i % 3] + f" ({i})"
            yield (
                lang,
                {
                    "model": "chat",
                    "max_tokens": 4,
                    "messages": [
                        {"role": "system", "content": "You are the ops agent."},
                        {"role": "user", "content": text},
                    ],
                },
            )


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    sim = Sim("eu-west-1", "--tokenizer", "o200k_base")  # the provider bills with o200k
    gw = Gateway(write_config(tmp_path_factory.mktemp("drift"), {"sim-eu": sim}))  # we count with cl100k
    try:
        for _, body in bodies():
            r = httpx.post(f"{gw.url}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {API_KEY}"})
            assert r.status_code == 200
        wait_recorded(gw.data_dir, 48, where='"airlock.local.input_tokens" IS NOT NULL')
    finally:
        gw.stop()
        sim.stop()
    return gw.data_dir


def test_drift_matches_a_direct_computation(recorded: Path) -> None:
    cl100k, o200k = get_tokenizer("cl100k_base"), get_tokenizer("o200k_base")
    expected: dict[str, list[float]] = {}
    for lang, body in bodies():
        expected.setdefault(SCRIPT_OF[lang], []).append(count_request(o200k, body) / count_request(cl100k, body) - 1)
    cells = {c.key["script"]: c for c in drift_cells(DuckDBSpanReader(DataDir.at(recorded)), ["model", "script"])}
    assert set(cells) == set(expected)
    for script, ratios in expected.items():
        cell = cells[script]
        assert cell.n == len(ratios)
        assert cell.p50 == pytest.approx(statistics.median(ratios), abs=1e-12)
        assert cell.mean == pytest.approx(statistics.fmean(ratios), abs=1e-12)
        assert cell.max == pytest.approx(max(ratios), abs=1e-12)
        assert cell.margin is None  # 12 observations cannot support a 95%/95% bound
    # o200k bills Japanese and Korean far below cl100k's count: a wrong mapping, flagged; English is fine.
    assert cells["Hiragana/Katakana"].p50 < -0.15 and any("mapping" in f for f in cells["Hiragana/Katakana"].flags)
    assert abs(cells["Latin"].p50) < 0.05 and not any("mapping" in f for f in cells["Latin"].flags)


def test_local_counts_and_script_are_recorded(recorded: Path) -> None:
    rows = DuckDBSpanReader(DataDir.at(recorded)).sql(
        'SELECT "airlock.script" AS script, "airlock.local.tokenizer" AS tok, "airlock.local.output_tokens" AS out,'
        ' "gen_ai.usage.output_tokens" AS billed_out FROM spans'
    )
    assert {r["script"] for r in rows} == {SCRIPT_OF[lang] for lang in LANGS}
    assert {r["tok"] for r in rows} == {"cl100k_base"}
    assert all(r["out"] and r["billed_out"] for r in rows)


def test_drift_command(recorded: Path) -> None:
    result = CliRunner().invoke(
        cli, ["tokens", "drift", "-d", str(recorded), "--by", "model,script,upstream"], env={"COLUMNS": "250"}
    )
    assert result.exit_code == 0, result.output
    assert "Hiragana/Katakana" in result.output and "mapping" in result.output and "n<59" in result.output
    bad = CliRunner().invoke(cli, ["tokens", "drift", "-d", str(recorded), "--by", "colour"])
    assert bad.exit_code == 2 and "cannot group by" in bad.output


def test_margin_with_enough_observations() -> None:
    from airlock.tokens.drift import Cell, summarise

    ratios = [i / 1000 for i in range(100)]  # 0.000 .. 0.099
    cell = summarise(Cell({"model": "m", "script": "Latin"}, ratios, list(range(100))))
    assert cell.margin == pytest.approx(0.098)  # the 99th smallest of 100 bounds the 95th percentile at 95%
    shifted = summarise(Cell({"model": "m", "script": "Han"}, [0.0] * 30 + [0.2] * 30, list(range(60))))
    assert any("changed" in f for f in shifted.flags)


def test_margin_for_large_cells() -> None:
    """Regression: the binomial sum overflowed a float from about 1,030 observations."""
    from airlock.tokens.drift import upper_bound_rank

    assert upper_bound_rank(59) == 59 and upper_bound_rank(58) is None
    k = upper_bound_rank(100_000)
    assert k is not None and 95_000 < k < 95_200  # just above the 95th percentile's rank
