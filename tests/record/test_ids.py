from airlock.record.ids import format_traceparent, new_span_id, new_trace_id, parse_traceparent


def test_traceparent_roundtrip_and_invalid_values_ignored() -> None:
    t, s = new_trace_id(), new_span_id()
    assert len(t) == 32 and len(s) == 16
    assert parse_traceparent(format_traceparent(t, s)) == (t, s)
    for bad in (
        None,
        "",
        "garbage",
        "ff-" + t + "-" + s + "-01",
        "00-" + "0" * 32 + "-" + s + "-01",
        "00-" + t + "-" + "0" * 16 + "-01",
        "00-" + t[:-1] + "-" + s + "-01",
    ):
        assert parse_traceparent(bad) is None


def test_ids_are_unique() -> None:
    assert len({new_span_id() for _ in range(10_000)}) == 10_000
