import orjson

from airlock.gateway.sse import UsageFilter
from airlock.record.enrich import _telling_events, from_sse_response


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


def _stream(*docs: object, sep: bytes = b"\n\n", space: bool = False) -> bytes:
    out = b""
    for doc in docs:
        data = doc if isinstance(doc, bytes) else orjson.dumps(doc)
        if space:
            data = data.replace(b'":', b'": ')
        out += b"data: " + data + sep
    return out + b"data: [DONE]" + sep


def _chunk(i: int, delta: dict, finish: str | None = None, usage: object = "absent", index: int = 0) -> dict:
    doc: dict = {"id": "c1", "model": "m", "choices": [{"index": index, "delta": delta, "finish_reason": finish}]}
    if usage != "absent":
        doc["usage"] = usage
    return doc


def test_reading_a_stream_without_its_text_finds_what_reading_every_event_finds() -> None:
    """The fast path (no local count: only the events that are more than a content delta are parsed)
    must agree with parsing every event, whatever the stream's shape."""
    usage = {"prompt_tokens": 5, "completion_tokens": 3, "prompt_tokens_details": {"cached_tokens": 2}}
    openai_style = _stream(  # usage null in every chunk, then a usage-only chunk
        *[_chunk(i, {"content": f"t{i}"}, usage=None) for i in range(50)],
        _chunk(50, {}, "stop", usage=None),
        {"id": "c1", "model": "m", "choices": [], "usage": usage},
    )
    tools = _stream(
        _chunk(0, {"role": "assistant"}),
        *[
            _chunk(i, {"tool_calls": [{"index": i % 2, "function": {"name": "f", "arguments": "{}"}}]})
            for i in range(6)
        ],
        _chunk(7, {}, "tool_calls"),
    )
    two_choices = _stream(  # choice 1 finishes half-way, choice 0 at the end
        *[_chunk(i, {"content": "x"}, index=i % 2) for i in range(20)],
        _chunk(20, {}, "length", index=1),
        *[_chunk(i, {"content": "y"}) for i in range(20)],
        _chunk(40, {}, "stop"),
    )
    multi_line = (
        b'data: {"id": "c1", "model": "m",\ndata: "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}\n\n'
    )
    streams = {
        "openai": openai_style,
        "spaced": _stream(*[_chunk(i, {"content": "a"}) for i in range(5)], _chunk(5, {}, "stop"), space=True),
        "crlf": _stream(_chunk(0, {"content": "a"}), _chunk(1, {}, "stop"), sep=b"\r\n\r\n"),
        "tools": tools,
        "two_choices": two_choices,
        "multi_line": _stream(_chunk(0, {"content": "a"})).replace(b"data: [DONE]", multi_line + b"data: [DONE]"),
        "torn": openai_style[: len(openai_style) // 2],
    }
    streams["spaced_colons"] = (
        streams["openai"].replace(b'"usage":{', b'"usage" : {').replace(b'"finish_reason":"', b'"finish_reason" : "')
    )
    streams["first_not_json"] = b"data: hello\n\n" + streams["openai"]
    for name, raw in streams.items():
        full = from_sse_response(raw)
        full.pop("_text")
        fast = from_sse_response(raw, want_text=False)
        fast.pop("_text", None)
        assert fast == full, name
    # the fast path is taken for the shapes servers send, and refused where its markers could miss
    fast_shapes = {"openai", "spaced", "tools", "two_choices", "first_not_json", "torn"}
    for name, raw in streams.items():
        assert (_telling_events(raw) is not None) == (name in fast_shapes), name
    assert from_sse_response(openai_style, want_text=False)["gen_ai.usage.cache_read.input_tokens"] == 2
    assert from_sse_response(tools, want_text=False)["airlock.response.tool_call_count"] == 2
    assert from_sse_response(two_choices, want_text=False)["gen_ai.response.finish_reasons"] == ["stop", "length"]
