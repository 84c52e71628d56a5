"""Sending a request upstream with failover. Each attempt becomes a hop row: where it went (node,
upstream, address, region, jurisdiction, deployment), what happened, and why the next was tried.
Connect errors, timeouts and 5xx fail over to the next target; a 4xx is the answer and is returned."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from airlock.errors import EgressRefused, UpstreamsExhausted
from airlock.gateway.egress import EgressClient
from airlock.gateway.metrics import GatewayMetrics
from airlock.gateway.routing import ResolvedRoute, ResolvedTarget


@dataclass
class Answer:
    """The upstream that answered: its response (open, when streaming) or its body."""

    target: ResolvedTarget
    status: int
    headers: Mapping[str, str]
    body: bytes | None  # None while a stream is still open
    response: aiohttp.ClientResponse | None
    sent: bytes  # the exact bytes sent upstream
    hops: list[dict[str, Any]] = field(default_factory=list)


BodyFor = Any  # Callable[[ResolvedTarget], bytes]


@dataclass(frozen=True, slots=True)
class _Prepared:
    """What stays the same for every call to one target at one path: computed once."""

    url: str
    headers: dict[str, str]
    timeout: aiohttp.ClientTimeout


class Forwarder:
    def __init__(self, egress: EgressClient, metrics: GatewayMetrics, node: str) -> None:
        self.egress = egress
        self.metrics = metrics
        self.node = node
        self._prepared: dict[tuple[int, str, bool], _Prepared] = {}

    def _prepare(self, target: ResolvedTarget, path: str, stream: bool) -> _Prepared:
        key = (id(target), path, stream)
        prep = self._prepared.get(key)
        if prep is None:
            up = target.upstream
            url = up.base_url + path
            self.egress.check(url)  # refused destinations are never cached, so each attempt is refused and counted
            headers = {"Content-Type": "application/json"}
            if stream:
                headers["Accept"] = "text/event-stream"
            if target.auth_header:
                headers["Authorization"] = target.auth_header
            # A stream may run long but must not stall: a read timeout. A plain call has one deadline
            # (a per-read timer is rescheduled on every chunk, which costs the hot path).
            if stream:
                timeout = aiohttp.ClientTimeout(connect=up.connect_timeout_s, sock_read=up.timeout_s)
            else:
                timeout = aiohttp.ClientTimeout(total=up.timeout_s, connect=up.connect_timeout_s)
            prep = self._prepared[key] = _Prepared(url, headers, timeout)
        return prep

    def _hop(
        self,
        ctx_ids: tuple[str, str],
        attempt: int,
        target: ResolvedTarget,
        start_ns: int,
        outcome: str,
        status: int | None,
        reason: str | None,
    ) -> dict[str, Any]:
        self.metrics.attempt(target.upstream.name, outcome)
        up = target.upstream
        return {
            "trace_id": ctx_ids[0],
            "span_id": ctx_ids[1],
            "attempt": attempt,
            "node": self.node,
            "upstream": up.name,
            "address": up.base_url,
            "region": up.region,
            "jurisdiction": up.jurisdiction,
            "deployment": up.deployment,
            "start_ns": start_ns,
            "end_ns": time.time_ns(),
            "outcome": outcome,
            "http_status": status,
            "reason": reason,
        }

    async def send(
        self,
        ids: tuple[str, str],
        route: ResolvedRoute,
        path: str,
        body_for: BodyFor,
        stream: bool,
        traceparent: str,
    ) -> Answer:
        hops: list[dict[str, Any]] = []
        last_error = "no upstream was tried"
        for attempt, target in enumerate(route.targets, 1):
            up = target.upstream
            sent = body_for(target)
            start = time.time_ns()
            resp: aiohttp.ClientResponse | None = None
            try:
                prep = self._prepare(target, path, stream)
                headers = {**prep.headers, "traceparent": traceparent}
                resp = await self.egress.session.post(prep.url, data=sent, headers=headers, timeout=prep.timeout)
                if resp.status >= 500:
                    detail = (await resp.content.read(512)).decode("utf-8", "replace")
                    resp.release()
                    last_error = f"{up.name}: HTTP {resp.status}"
                    hops.append(
                        self._hop(
                            ids, attempt, target, start, "http_5xx", resp.status, f"HTTP {resp.status}: {detail[:200]}"
                        )
                    )
                    continue
                body = None if stream and resp.status == 200 else await resp.read()
            except EgressRefused as e:
                last_error = f"{up.name}: {e.detail}"
                hops.append(self._hop(ids, attempt, target, start, "egress_refused", None, e.detail))
                continue
            except TimeoutError:
                if resp is not None:
                    resp.close()
                last_error = f"{up.name}: timed out"
                hops.append(self._hop(ids, attempt, target, start, "timeout", None, "timed out"))
                continue
            except (aiohttp.ClientError, OSError) as e:  # refused, reset, malformed response: next target
                if resp is not None:
                    resp.close()
                last_error = f"{up.name}: {type(e).__name__}: {e}"
                hops.append(
                    self._hop(ids, attempt, target, start, "connect_error", None, f"{type(e).__name__}: {e}"[:300])
                )
                continue
            except asyncio.CancelledError:
                if resp is not None:
                    resp.close()
                hops.append(self._hop(ids, attempt, target, start, "cancelled", None, "client disconnected"))
                raise _CancelledWithHops(hops) from None
            outcome = "ok" if resp.status < 400 else "http_4xx"
            hops.append(self._hop(ids, attempt, target, start, outcome, resp.status, None))
            return Answer(target, resp.status, resp.headers, body, resp if body is None else None, sent, hops)
        raise UpstreamsExhausted(
            f"all {len(route.targets)} upstream(s) of {route.name!r} failed; last: {last_error}",
            hops=[
                {k: h[k] for k in ("attempt", "upstream", "region", "outcome", "http_status", "reason")} for h in hops
            ],
            _hops=hops,
        )


class _CancelledWithHops(asyncio.CancelledError):
    """Cancellation (the client went away) that still carries the hops tried so far."""

    def __init__(self, hops: list[dict[str, Any]]) -> None:
        super().__init__()
        self.hops = hops
