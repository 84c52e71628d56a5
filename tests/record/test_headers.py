"""Header-derived columns and free attributes of a record."""

from __future__ import annotations

from typing import Any

from airlock.record.headers import apply_headers


def test_attribute_headers_cannot_set_airlock_attributes_but_the_calls_costs() -> None:
    record: dict[str, Any] = {"airlock.tenant": "globex"}
    apply_headers(
        record,
        [
            (b"x-airlock-attr-team", b"search"),
            (b"x-airlock-attr-airlock.tenant", b"acme"),
            (b"x-airlock-attr-airlock.task", b"acme-task"),
            (b"x-airlock-attr-airlock.cost.tool", b"0.002"),
            (b"Authorization", b"Bearer sk-secret"),
        ],
    )
    assert record["attributes"] == {"team": "search", "airlock.cost.tool": "0.002"}
    assert record["airlock.tenant"] == "globex"
    assert "authorization" not in record["airlock.request.headers"]
