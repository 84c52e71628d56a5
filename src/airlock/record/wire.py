"""What the gateway and its writer process say to each other over their socket pair: a stream of
msgpack values. A map is a record (gateway to writer); a two-element array is a message
`[kind, body]` (either way). msgpack is self-delimiting, so no framing is needed."""

from __future__ import annotations

from typing import Any

import msgpack

REQUEST = "airlock.payload.request"
UPSTREAM_REQUEST = "airlock.payload.upstream_request"
SAME_AS_REQUEST = "_upstream_same"  # the request went upstream unchanged: its bytes travel once

# gateway -> writer
STATUS = "status"  # the gateway's counters and metrics, for the status file
DRAIN = "drain"  # a rotated spill file to replay and delete
# writer -> gateway
READY = "ready"  # started (recovery done); body: the writer's pid
FAILED = "failed"  # could not start; body: why
DONE = "done"  # body: records from the socket now in the write-ahead file, cumulative
STATS = "stats"  # body: the writer's counters and its last error
DRAINED = "drained"  # body: the spill file's path, now replayed and deleted

_INT64 = (-(2**63), 2**64 - 1)


def packer() -> msgpack.Packer:
    return msgpack.Packer(use_bin_type=True)


def unpacker() -> msgpack.Unpacker:
    return msgpack.Unpacker(raw=False, max_buffer_size=1 << 30)


def pack_record(pack: msgpack.Packer, record: dict[str, Any]) -> bytes:
    """A queued record as bytes. The parsed request document stays behind (the writer parses the
    bytes again, off the gateway's loop); a value msgpack cannot hold (an integer over 64 bits, an
    unknown type) is sent as text, so the writer keeps the record as a partial row instead of the
    gateway losing it."""
    record.pop("_request_doc", None)
    payloads = record.get("_payloads")
    sent = payloads.get(UPSTREAM_REQUEST) if payloads else None
    if sent is not None and sent is payloads.get(REQUEST):
        record["_payloads"] = {k: v for k, v in payloads.items() if k != UPSTREAM_REQUEST}
        record[SAME_AS_REQUEST] = True
    try:
        return pack.pack(record)
    except (TypeError, ValueError, OverflowError):
        pack.reset()
        return pack.pack(_plain(record))


def unpack_record(record: dict[str, Any]) -> dict[str, Any]:
    """Undo what pack_record did to the payloads: the one object again, so it is hashed and stored once."""
    if record.pop(SAME_AS_REQUEST, False):
        payloads = record.get("_payloads") or {}
        if REQUEST in payloads:
            payloads[UPSTREAM_REQUEST] = payloads[REQUEST]
    return record


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, str | bytes | float):
        return value
    if isinstance(value, int):
        return value if _INT64[0] <= value <= _INT64[1] else str(value)
    return str(value)
