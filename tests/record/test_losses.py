"""The loss-count file (record/losses.py) on a real directory: one fixed block, rewritten in place,
read back by `airlock status` and /metrics; a full disk is in test_full_disk.py."""

from __future__ import annotations

import os
from pathlib import Path

import orjson

from airlock.gateway.metrics import worker_statuses
from airlock.record.losses import LOSS_FILE_BYTES, OTHER_REASONS, LossFile, decode, encode, loss_path, read_losses


def test_a_count_is_one_block_of_fixed_size_rewritten_in_place(tmp_path: Path) -> None:
    f = LossFile(loss_path(tmp_path, "w1", "writer"), "w1", "w1", "writer")
    f.reserve()
    path = tmp_path / "w1.writer.lost"
    inode = path.stat().st_ino
    assert path.stat().st_size == LOSS_FILE_BYTES
    assert read_losses(tmp_path).dropped == 0
    assert f.write(3, {"spill failed: No space left on device": 3})
    assert f.write(5, {"spill failed: No space left on device": 5})
    assert path.stat().st_size == LOSS_FILE_BYTES and path.stat().st_ino == inode  # the same block, not a new file
    losses = read_losses(tmp_path)
    assert losses.dropped == 5
    assert losses.reasons == {"spill failed: No space left on device": 5}
    assert losses.files[0]["role"] == "writer" and losses.files[0]["pid"] == os.getpid()


def test_reasons_that_do_not_fit_are_folded_and_the_count_is_kept_whole() -> None:
    reasons = {f"reason {i} " + "y" * 1000: i + 1 for i in range(100)}
    block = encode({"worker": "w", "writer_id": "w", "role": "gateway", "dropped": 5050, "reasons": reasons})
    assert len(block) == LOSS_FILE_BYTES
    content = decode(block)
    assert content is not None and content["dropped"] == 5050
    assert sum(content["reasons"].values()) == 5050
    assert content["reasons"][OTHER_REASONS] > 0
    assert f"reason 99 {'y' * 200}" in "".join(content["reasons"])  # the most frequent stays, cut to length


def test_a_damaged_block_is_reported_not_read_as_zero(tmp_path: Path) -> None:
    f = LossFile(loss_path(tmp_path, "w1", "writer"), "w1", "w1", "writer")
    f.reserve()
    f.write(7, {"x": 7})
    f.close()
    path = tmp_path / "w1.writer.lost"
    raw = bytearray(path.read_bytes())
    raw[12] ^= 0xFF  # a torn write at a power loss
    path.write_bytes(bytes(raw))
    losses = read_losses(tmp_path)
    assert losses.dropped == 0 and losses.unreadable == ["w1.writer.lost: damaged"]


def test_a_file_left_with_nothing_counted_is_taken_over_by_the_next_process(tmp_path: Path) -> None:
    """So run/ keeps about one file per live process, and a restart on a full disk finds its block."""
    clean = LossFile(loss_path(tmp_path, "w1", "writer"), "w1", "w1", "writer")
    lossy = LossFile(loss_path(tmp_path, "w1", "gateway"), "w1", "w1", "gateway")
    alive = LossFile(loss_path(tmp_path, "w2", "writer"), "w2", "w2", "writer")
    for f in (clean, lossy, alive):
        f.reserve()
    lossy.write(2, {"x": 2})
    spare_inode = (tmp_path / "w1.writer.lost").stat().st_ino
    clean.close()
    lossy.close()
    nxt = LossFile(loss_path(tmp_path, "w3", "writer"), "w3", "w3", "writer")
    nxt.reserve()
    assert (tmp_path / "w3.writer.lost").stat().st_ino == spare_inode  # renamed, not made
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w1.gateway.lost", "w2.writer.lost", "w3.writer.lost"]
    other = LossFile(loss_path(tmp_path, "w4", "writer"), "w4", "w4", "writer")
    other.reserve()  # no spare left: the counted one and the live ones are not taken
    assert (tmp_path / "w4.writer.lost").exists() and (tmp_path / "w1.gateway.lost").exists()
    nxt.write(1, {"y": 1})
    losses = read_losses(tmp_path)
    assert losses.dropped == 3 and losses.reasons == {"x": 2, "y": 1}
    assert sorted(f["writer_id"] for f in losses.files) == ["w1", "w3"]


def test_a_file_that_could_not_be_reserved_is_made_at_the_next_count(tmp_path: Path) -> None:
    run = tmp_path / "run"
    f = LossFile(loss_path(run, "w1", "writer"), "w1", "w1", "writer")
    assert not f.write(1, {"x": 1})  # no folder yet: refused, the count stays in memory
    run.mkdir()
    assert f.write(2, {"x": 2}) and f.reserved
    assert read_losses(run).dropped == 2


def test_status_files_a_full_disk_left_stale_are_raised_to_the_loss_count(tmp_path: Path) -> None:
    """A status file is replaced by a rename, which a full disk refuses: it can say 0 dropped while the
    loss files say otherwise. The worker's request path and each of its writers count separately."""
    status = {"writer_id": "w1-r1", "worker": "w1", "pid": 2**22 + 1, "dropped": 1, "drop_reasons": {"old": 1}}
    (tmp_path / "w1-r1.json").write_bytes(orjson.dumps(status))
    (tmp_path / "w9.json").write_bytes(orjson.dumps({"writer_id": "w9", "pid": 2**22 + 2, "dropped": 0}))
    for owner, role, n in (("w1", "gateway", 4), ("w1-r1", "writer", 3), ("w1", "writer", 50)):
        f = LossFile(loss_path(tmp_path, owner, role), "w1", owner, role)
        f.write(n, {f"{role} reason": n})
    rows = {s["writer_id"]: s for s in worker_statuses(tmp_path, live_only=False)}
    assert rows["w1-r1"]["dropped"] == 7  # its own writer's 3 and its worker's request path's 4, not w1's 50
    assert rows["w1-r1"]["drop_reasons"] == {"gateway reason": 4, "writer reason": 3}
    assert rows["w9"]["dropped"] == 0
    assert read_losses(tmp_path).dropped == 57


def test_a_count_after_close_goes_back_into_the_same_block(tmp_path: Path) -> None:
    f = LossFile(loss_path(tmp_path, "w1", "gateway"), "w1", "w1", "gateway")
    f.reserve()
    f.write(1, {"x": 1})
    inode = (tmp_path / "w1.gateway.lost").stat().st_ino
    f.close()
    assert f.write(2, {"x": 2})  # a record refused after the recorder closed
    f.close()
    assert [p.stat().st_ino for p in tmp_path.iterdir()] == [inode]
    assert read_losses(tmp_path).dropped == 2
