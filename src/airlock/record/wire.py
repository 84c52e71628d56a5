"""What the gateway and its writer process say to each other over their socket pair: length-prefixed
frames, each one pickled message `(kind, body)`.

Records travel in batches, one frame per batch (`RECORDS`). Pickle, not msgpack: one dumps of a
batch shares the key strings and repeated values of its records (half the bytes), keeps a payload
that two columns name as one object (the request sent upstream unchanged is hashed and stored once),
and takes any int; measured on the benchmark's records, 1.1 us a record to write on the gateway's loop
(msgpack: 2.5-3.9) and 6 us to read in the writer (msgpack: 13). The socket pair is private to a
worker and the writer process it started, so nothing else can put a frame on it."""

from __future__ import annotations

import pickle
import struct
from collections.abc import Iterator
from typing import Any

# gateway -> writer
START = "start"  # the first frame: configuration, writer id, stamp
RECORDS = "records"  # body: a list of records
STATUS = "status"  # the gateway's counters and metrics, for the status file
DRAIN = "drain"  # a rotated spill file to replay and delete
# writer -> gateway
READY = "ready"  # started (recovery done); body: {pid, idle (under SCHED_IDLE), idle_refused (why not)}
FAILED = "failed"  # could not start; body: why
DONE = "done"  # body: records from the socket now in the write-ahead file, cumulative
STATS = "stats"  # body: the writer's counters and its last error
DRAINED = "drained"  # body: the spill file's path, now replayed and deleted

_LENGTH = struct.Struct("<I")
_INT64 = (-(2**63), 2**64 - 1)


def frame(kind: str, body: Any) -> bytes:
    data = pickle.dumps((kind, body), protocol=5)
    return _LENGTH.pack(len(data)) + data


def records_frame(records: list[dict[str, Any]]) -> bytes:
    """A batch of records as one frame. A record holding a value pickle cannot carry (an object of
    some odd type) is sent with that value as text, so the writer keeps it instead of the batch being lost."""
    try:
        return frame(RECORDS, records)
    except (pickle.PicklingError, TypeError, AttributeError, ValueError, RecursionError):
        safe = []
        for record in records:
            try:
                pickle.dumps(record, protocol=5)
                safe.append(record)
            except (pickle.PicklingError, TypeError, AttributeError, ValueError, RecursionError):
                safe.append(plain(record))
        return frame(RECORDS, safe)


class FrameReader:
    """Frames out of a byte stream that arrives in pieces."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> Iterator[tuple[str, Any]]:
        buf = self._buf
        buf += data
        pos, end = 0, len(buf)
        try:
            while end - pos >= _LENGTH.size:
                (length,) = _LENGTH.unpack_from(buf, pos)
                start = pos + _LENGTH.size
                if end - start < length:
                    break
                with memoryview(buf)[start : start + length] as body:
                    message = pickle.loads(body)
                pos = start + length
                yield message
        finally:
            del buf[:pos]


def plain(value: Any) -> Any:
    """A value reduced to what any serializer and the store can take: containers, text, numbers, bytes."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if value is None or isinstance(value, bool | str | bytes | float):
        return value
    if isinstance(value, int):
        return value if _INT64[0] <= value <= _INT64[1] else str(value)
    return str(value)
