"""ExportCursorRepository, on every backend: a move is compare-and-set per writer, all or none, and of two
exporters moving a cursor from the same position exactly one wins."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from contract_racing import race

from airlock.errors import StoreConflict
from airlock.store.export import Cursor, CursorMove


def test_cursors_move_from_where_they_were_read(open_export_cursors: Callable[[], Any]) -> None:
    cursors = open_export_cursors()
    assert cursors.load() == {}
    cursors.advance({})  # nothing to move
    cursors.advance({"w1": CursorMove(None, Cursor(3)), "w2": CursorMove(None, Cursor(-1, "w2.0-0.parquet", 40))})
    assert cursors.load() == {"w1": Cursor(3), "w2": Cursor(-1, "w2.0-0.parquet", 40)}
    cursors.advance({"w2": CursorMove(Cursor(-1, "w2.0-0.parquet", 40), Cursor(0))})
    assert cursors.load() == {"w1": Cursor(3), "w2": Cursor(0)}


@pytest.mark.parametrize(
    "stale",
    [
        CursorMove(None, Cursor(9)),  # believed it had none
        CursorMove(Cursor(2), Cursor(9)),  # another seq_done
        CursorMove(Cursor(3, "w1.4-4.parquet", 0), Cursor(9)),  # another partial segment
        CursorMove(Cursor(3, None, 5), Cursor(9)),  # another row count
    ],
)
def test_a_move_from_another_position_changes_nothing(open_export_cursors: Callable[[], Any], stale: Any) -> None:
    cursors = open_export_cursors()
    cursors.advance({"w1": CursorMove(None, Cursor(3))})
    with pytest.raises(StoreConflict) as refused:
        cursors.advance({"w0": CursorMove(None, Cursor(1)), "w1": stale})  # w0's move is refused with it
    assert refused.value.extra == {"writer": "w1"} and refused.value.status == 409
    assert cursors.load() == {"w1": Cursor(3)}


def test_a_move_for_a_writer_not_stored_from_a_position_is_refused(open_export_cursors: Callable[[], Any]) -> None:
    cursors = open_export_cursors()
    with pytest.raises(StoreConflict):
        cursors.advance({"w1": CursorMove(Cursor(3), Cursor(4))})
    assert cursors.load() == {}


@pytest.mark.parametrize("expected", [None, Cursor(3)])
def test_two_exporters_moving_one_cursor_at_once_exactly_one_wins(
    open_export_cursors: Callable[[], Any], expected: Cursor | None
) -> None:
    first, second = open_export_cursors(), open_export_cursors()
    if expected is not None:
        first.advance({"w1": CursorMove(None, expected)})
    for round_no in range(10):
        read = first.load().get("w1")
        mine = {"w1": CursorMove(read, Cursor(100 + round_no))}
        # the other exporter also starts a writer of its own: all or none, so only if it wins
        theirs = {f"x{round_no}": CursorMove(None, Cursor(0)), "w1": CursorMove(read, Cursor(200 + round_no))}
        outcome = race(lambda m=mine: first.advance(m), lambda t=theirs: second.advance(t))
        assert sorted(type(o).__name__ for o in outcome) == ["NoneType", "StoreConflict"], outcome
        stored = second.load()
        if outcome[0] is None:
            assert stored["w1"] == Cursor(100 + round_no) and f"x{round_no}" not in stored
        else:
            assert stored["w1"] == Cursor(200 + round_no) and stored[f"x{round_no}"] == Cursor(0)
