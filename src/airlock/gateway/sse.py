"""Relaying a server-sent-event stream, optionally hiding the usage-only event Airlock asked the
upstream for (stream_options.include_usage) when the client itself did not ask for it."""

from __future__ import annotations

import orjson


def _is_usage_only(event: bytes) -> bool:
    for line in event.split(b"\n"):
        if line.startswith(b"data:"):
            try:
                doc = orjson.loads(line[5:].strip())
            except orjson.JSONDecodeError:
                return False
            return isinstance(doc, dict) and "usage" in doc and not doc.get("choices")
    return False


class UsageFilter:
    """Feed upstream chunks in; get back the bytes to send the client (event-aligned when filtering)."""

    def __init__(self) -> None:
        self._buf = b""

    def feed(self, chunk: bytes) -> bytes:
        if not self._buf and b'"usage"' not in chunk and chunk.endswith(b"\n\n") and b"\r" not in chunk:
            return chunk  # fast path: whole events, none carrying usage
        buf = self._buf + chunk
        hold = b""
        if buf.endswith(b"\r"):  # its \n may arrive in the next chunk: normalise the pair together
            buf, hold = buf[:-1], b"\r"
        buf = buf.replace(b"\r\n", b"\n")
        cut = buf.rfind(b"\n\n")
        if cut < 0:
            self._buf = buf + hold
            return b""
        complete, self._buf = buf[: cut + 2], buf[cut + 2 :] + hold
        if b'"usage"' not in complete:
            return complete
        events = complete.split(b"\n\n")
        return b"".join(e + b"\n\n" for e in events if e and not _is_usage_only(e))

    def flush(self) -> bytes:
        rest, self._buf = self._buf.replace(b"\r\n", b"\n"), b""
        return b"" if _is_usage_only(rest) else rest
