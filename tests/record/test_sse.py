import orjson

from airlock.gateway.sse import UsageFilter
from airlock.record.enrich import from_sse_response


def event(doc: dict) -> bytes:
    return b"data: " + orjson.dumps(doc) + b"\n\n"


STREAM = (
    event({"id": "c1", "model": "m", "choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": None}]})
    + event({"id": "c1", "model": "m", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    + event(
        {
            "id": "c1",
            "model": "m",
            "choices": [],
            "usage": {"prompt_tokens": 5, "completion_tokens": 2, "prompt_tokens_details": {"cached_tokens": 3}},
        }
    )
    + b"data: [DONE]\n\n"
)


def test_usage_filter_hides_only_the_usage_event_at_any_chunking() -> None:
    expected = STREAM.replace(STREAM.split(b"\n\n")[2] + b"\n\n", b"")
    for size in (1, 7, 64, len(STREAM)):
        f = UsageFilter()
        out = b"".join(f.feed(STREAM[i : i + size]) for i in range(0, len(STREAM), size)) + f.flush()
        assert out == expected, size


def test_usage_read_from_raw_sse() -> None:
    facts = from_sse_response(STREAM)
    assert facts["gen_ai.usage.input_tokens"] == 5 and facts["gen_ai.usage.output_tokens"] == 2
    assert facts["gen_ai.usage.cache_read.input_tokens"] == 3
    assert facts["gen_ai.response.finish_reasons"] == ["stop"] and facts["gen_ai.response.id"] == "c1"


def test_crlf_split_across_chunks() -> None:
    """Regression: a \\r\\n delimiter split between two chunks merged the usage event with [DONE]."""
    crlf = STREAM.replace(b"\n", b"\r\n")
    expected = STREAM.replace(STREAM.split(b"\n\n")[2] + b"\n\n", b"")
    for size in (1, 2, 3, 5, 7, len(crlf)):
        f = UsageFilter()
        out = b"".join(f.feed(crlf[i : i + size]) for i in range(0, len(crlf), size)) + f.flush()
        assert out == expected, size
