"""What a request's headers say about it, read off the request path (in the batch writer): the
principal and prompt columns, free attributes from x-airlock-attr-<name>, and the headers themselves
with credentials removed."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

ATTR_PREFIX = "x-airlock-attr-"
HEADER_COLUMNS = {
    "x-airlock-session": "airlock.session",
    "x-airlock-task": "airlock.task",
    "x-airlock-user": "airlock.user",
    "x-airlock-agent": "airlock.agent_chain",
    "x-airlock-intent": "airlock.intent",
    "x-airlock-prompt": "airlock.prompt.name",
    "x-airlock-prompt-version": "airlock.prompt.version",
    "x-airlock-replay-of": "airlock.replay.of",
    "x-airlock-replay-run": "airlock.replay.run",
}
REPLAY_TENANT = "airlock-replay"  # the tenant of the replay runner's in-process key
# Never recorded: credentials and cookies.
SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "x-api-key", "api-key"})


def apply_headers(record: dict[str, Any], raw: Iterable[tuple[bytes, bytes]] | Iterable[list[bytes]]) -> None:
    """Fill a record's header-derived columns from the raw (name, value) byte pairs of its request."""
    kept: dict[str, str] = {}
    attributes: dict[str, str] = dict(record.get("attributes") or {})
    for name_b, value_b in raw:
        name = name_b.decode("latin-1").lower()
        if name in SECRET_HEADERS:
            continue
        value = value_b.decode("utf-8", "replace")
        kept[name] = value
        if name.startswith("x-airlock-"):
            if name.startswith(ATTR_PREFIX):
                attr = name[len(ATTR_PREFIX) :]
                # Airlock's own namespace is not a caller's to set, but for the call's own costs.
                if attr and (not attr.startswith("airlock.") or attr.startswith("airlock.cost.")):
                    attributes[attr] = value
            elif name in HEADER_COLUMNS and record.get(HEADER_COLUMNS[name]) is None:
                if name.startswith("x-airlock-replay-") and record.get("airlock.tenant") != REPLAY_TENANT:
                    continue  # only the replay runner's own key may mark a call as a replay
                record[HEADER_COLUMNS[name]] = value
    record["airlock.request.headers"] = kept
    record["attributes"] = attributes
