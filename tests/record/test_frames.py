from pathlib import Path

from airlock.record import frames


def test_frames_roundtrip_and_torn_tail_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "x.wal"
    f = frames.FrameFile(str(path))
    records = [{"i": i, "blob": b"\x00\xff" * i, "text": "日本語"} for i in range(50)]
    f.append(b"".join(frames.encode(r) for r in records))
    f.close()
    whole = path.read_bytes()
    assert frames.read_frames(str(path)) == (records, 0)
    path.write_bytes(whole[:-7])  # a crash in the middle of the last frame
    got, torn = frames.read_frames(str(path))
    assert got == records[:-1] and torn > 0
    flipped = bytearray(whole)
    flipped[len(whole) // 2] ^= 0xFF  # a damaged frame: reading stops there, never returns garbage
    path.write_bytes(bytes(flipped))
    got, torn = frames.read_frames(str(path))
    assert got == records[: len(got)] and torn > 0


def test_rows_as_json_and_records_as_msgpack_read_back_alike(tmp_path: Path) -> None:
    path = tmp_path / "mixed.wal"
    f = frames.FrameFile(str(path))
    row = {"span_id": "ab", "start_ns": 1_764_000_000_000_000_000, "attributes": {"k": "v"}, "_hops": [{"attempt": 1}]}
    with_bytes = {"span_id": "cd", "_payloads": {"airlock.payload.request": b"\x00{"}}
    encoded = [frames.encode_row(row), frames.encode_row(with_bytes), frames.encode(row)]
    assert encoded[0][8:9] == b"{" and encoded[1][8:9] != b"{"  # JSON where it can, msgpack where it cannot
    f.append(b"".join(encoded))
    f.close()
    assert frames.read_frames(str(path)) == ([row, with_bytes, row], 0)
