from pathlib import Path

import pyarrow as pa

from airlock.record.schema import HOP_SCHEMA, SPAN_SCHEMA
from airlock.store.embedded import DataDir, DuckDBSpanReader, ParquetSegments
from airlock.store.embedded.segments import live_segments


def spans(ids: list[str]) -> pa.Table:
    return pa.Table.from_pylist(
        [{"trace_id": i, "span_id": i, "start_ns": n} for n, i in enumerate(ids)], schema=SPAN_SCHEMA
    )


def test_compaction_merges_and_readers_see_each_row_once(tmp_path: Path) -> None:
    data = DataDir.at(tmp_path)
    data.create()
    seg = ParquetSegments(data)
    for n in range(5):
        seg.write("w1", n, spans([f"{n}-a", f"{n}-b"]), HOP_SCHEMA.empty_table())
    seg.write("w2", 0, spans(["other"]), HOP_SCHEMA.empty_table())
    reader = DuckDBSpanReader(data)
    assert reader.sql("SELECT count(*) AS n FROM spans")[0]["n"] == 11
    # The moment a compacted file and its inputs both exist is invisible to readers.
    merged = pa.concat_tables([spans([f"{n}-a", f"{n}-b"]) for n in range(3)])
    import pyarrow.parquet as pq

    pq.write_table(merged, data.spans / "w1.00000000-00000002.parquet")
    assert reader.sql("SELECT count(*) AS n, count(DISTINCT span_id) AS d FROM spans")[0] == {"n": 11, "d": 11}
    (data.spans / "w1.00000000-00000002.parquet").unlink()
    assert seg.compact("w1", min_segments=4) == 5
    assert [(s.writer, s.first, s.last) for s in live_segments(data.spans)] == [("w1", 0, 4), ("w2", 0, 0)]
    assert len(list(data.spans.glob("*.parquet"))) == 2
    assert reader.sql("SELECT count(*) AS n, count(DISTINCT span_id) AS d FROM spans")[0] == {"n": 11, "d": 11}
    assert seg.covers("w1", 3) and not seg.covers("w1", 5)


def test_reader_on_empty_store(tmp_path: Path) -> None:
    data = DataDir.at(tmp_path)
    data.create()
    assert DuckDBSpanReader(data).sql("SELECT count(*) AS n FROM spans")[0]["n"] == 0
