"""`airlock replay run`: re-execute recorded traffic against a candidate route or model.

Each selected trace is replayed turn by turn through an in-process gateway on 127.0.0.1, so the replay
is itself recorded (tagged `airlock.replay.run`, each span linked to its original by
`airlock.replay.of`). A turn sends the bytes recorded as sent upstream with only the model swapped
(and parameters the candidate refuses removed and listed). When the original model asked for tools,
the next turn is the recorded next request, which carries every tool result verbatim as the original
model received it: when the candidate asked for the same tools with canonically equal arguments, those
are exactly the results it would have got. Replay never calls a tool and never sends an email. A
divergence (other tools, other arguments, or an answer where the original called a tool) is marked;
by option the replay stops there or goes on with the recorded next turn. Progress is kept in SQLite,
so a killed replay resumes where it stopped."""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from airlock.compose import build_gateway, gateway_state
from airlock.config.schema import Config
from airlock.errors import AirlockError, ReplayError, StoreConflict
from airlock.ledger import call_cost, find_model, price_in_effect
from airlock.record.headers import REPLAY_TENANT
from airlock.record.ids import format_traceparent, new_span_id, new_trace_id
from airlock.replay.fidelity import check_span, replayed_span
from airlock.replay.messages import Answer, parse_answer, same_tool_calls
from airlock.store import Stores, build_stores
from airlock.store.interface import TraceFilter
from airlock.store.replay import NewReplayRun, Payloads, ReplayRun, ReplayRunRepository, ReplaySelection, TraceSelection

STALE_CLAIM = timedelta(hours=1)  # a claim not renewed for this long is taken to be a dead runner's


@dataclass
class Progress:
    done: int = 0
    failed: int = 0
    diverged: int = 0
    skipped: int = 0


def schema_verdict(request: dict[str, Any], answer: Answer) -> bool | None:
    """Whether the answer satisfies the request's response_format (None when none was asked)."""
    fmt = request.get("response_format")
    if not isinstance(fmt, dict) or fmt.get("type") not in ("json_object", "json_schema"):
        return None
    try:
        doc = orjson.loads(answer.content or "")
    except orjson.JSONDecodeError:
        return False
    if fmt["type"] == "json_object":
        return isinstance(doc, dict)
    import jsonschema

    schema = (fmt.get("json_schema") or {}).get("schema") or {}
    try:
        jsonschema.validate(doc, schema)
    except jsonschema.ValidationError:
        return False
    except jsonschema.SchemaError:
        return None
    return True


class ReplayRunner:
    """One named replay run: `prepare` creates it (or finds it, to resume), `run` replays its traces.
    Two runners never run one name at once: `run` claims the run in the repository first."""

    def __init__(
        self,
        config: Config,
        name: str,
        target: str,
        on_divergence: str = "continue",
        concurrency: int = 4,
        *,
        stores: Stores | None = None,
    ) -> None:
        self.config = config
        self.name = name
        self.target = target
        self.on_divergence = on_divergence
        self.concurrency = concurrency
        stores = stores or build_stores(config)
        self.selection: ReplaySelection = stores.replay
        self._open_runs: Callable[[], ReplayRunRepository] = stores.open_replay_runs
        self.key = "sk-replay-" + secrets.token_hex(16)  # lives only in this process
        self.owner = f"{socket.gethostname()}/{os.getpid()}/{secrets.token_hex(4)}"
        self.progress = Progress()
        self.chosen: TraceSelection | None = None  # what prepare selected, when it created the run
        self.finished = False  # prepare found the run finished before
        self._url = ""
        self._target_spec: Any = None
        self._spans: dict[str, list[dict[str, Any]]] = {}
        self._payload_set: Payloads | None = None

    # -- the run's state ---------------------------------------------------------------------------

    def prepare(self, flt: TraceFilter, *, whole: bool = False) -> list[str]:
        """Create the run (or find it, to resume) and return the traces still to replay. A new run takes
        the newest `flt.limit` traces the filter matches, or all of them when `whole`; `chosen` then says
        how many it took of how many. `progress` starts from what the run already holds."""
        runs = self._open_runs()
        try:
            run = runs.load(self.name)
            if run is None:
                self.chosen = self.selection.traces(flt, None if whole else flt.limit)
                if not self.chosen.trace_ids:
                    raise ReplayError("the selection matches no recorded traces")
                selection = {**asdict(flt), "limit": self.chosen.limit, "matched": self.chosen.matched}
                try:
                    runs.create(
                        NewReplayRun(
                            self.name,
                            self.target,
                            selection,
                            {"on_divergence": self.on_divergence},
                            self.chosen.trace_ids,
                        )
                    )
                except StoreConflict:  # another runner created it between our look and our insert
                    self.chosen = None
                    run = runs.load(self.name)
            if run is not None:
                self._same_as_stored(run)
                self.finished = run.finished_at is not None
            counts = runs.counts(self.name)
            self.progress = Progress(done=counts.done, diverged=counts.diverged, skipped=counts.skipped)
            return runs.unfinished(self.name)
        finally:
            runs.close()

    def _same_as_stored(self, run: ReplayRun) -> None:
        if run.target != self.target:
            raise ReplayError(f"replay {self.name!r} exists with target {run.target!r}; use another --name")
        stored = run.options.get("on_divergence")
        if stored != self.on_divergence:
            raise ReplayError(
                f"replay {self.name!r} was started with --on-divergence {stored}; "
                "resume it the same way or use another --name"
            )

    def _claim(self, runs: ReplayRunRepository) -> None:
        """Take the run for this runner, over a dead runner's claim but never over a live one's."""
        run = runs.load(self.name)
        if run is None:
            raise ReplayError(f"no replay named {self.name!r}: prepare it first")
        holder = run.claimed_by
        busy = f"replay {self.name!r} is being run by {holder}; wait for it to end or use another --name"
        if holder is not None and not _claim_is_stale(holder, run.claimed_at):
            raise ReplayError(busy)
        if not runs.claim(self.name, self.owner, holder):
            raise ReplayError(busy.replace(f" by {holder}", " by another runner"))

    # -- running ---------------------------------------------------------------------------------

    async def _probe(self, session: aiohttp.ClientSession, router: Any) -> None:
        """Fail fast when the target is unknown or its first upstream cannot be reached."""
        try:
            route = router.resolve(self.target)
        except AirlockError as e:
            raise ReplayError(f"target {self.target!r}: {e.detail}") from None
        first = route.targets[0]
        self._target_spec = first.model
        url = first.upstream.base_url + "/models"
        try:
            async with session.get(url, timeout=aiohttp.ClientTimeout(total=first.upstream.connect_timeout_s + 1)):
                pass
        except (aiohttp.ClientError, OSError, TimeoutError) as e:
            raise ReplayError(
                f"target {self.target!r}: upstream {first.upstream.name} at {first.upstream.base_url} "
                f"is unreachable: {type(e).__name__}: {e}"
            ) from None

    async def run(self, traces: list[str], on_progress: Callable[[Progress], None] | None = None) -> Progress:
        runs = self._open_runs()
        try:
            await asyncio.to_thread(self._claim, runs)
            try:
                still = set(await asyncio.to_thread(runs.unfinished, self.name))
                # another runner may have replayed some since prepare
                return await self._run(runs, [t for t in traces if t in still], on_progress)
            except StoreConflict as e:  # the claim was taken over while this runner saved
                raise ReplayError(e.detail) from None
            finally:
                await asyncio.to_thread(runs.release, self.name, self.owner)
        finally:
            runs.close()

    async def _run(
        self, runs: ReplayRunRepository, traces: list[str], on_progress: Callable[[Progress], None] | None
    ) -> Progress:
        app = build_gateway(self.config)
        state = gateway_state(app)
        state.auth.add_key(self.key, REPLAY_TENANT)
        runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._url = f"http://127.0.0.1:{port}/v1"
        limit = asyncio.Semaphore(self.concurrency)
        try:
            async with aiohttp.ClientSession(trust_env=False) as session:
                await self._probe(session, state.router)
                await asyncio.to_thread(self._preload, traces)

                async def one(trace_id: str) -> None:
                    async with limit:
                        status, result = await self.replay_trace(session, trace_id)
                        await asyncio.to_thread(runs.save_item, self.name, self.owner, trace_id, status, result)
                        if status == "done":
                            self.progress.done += 1
                            self.progress.diverged += result.get("diverged_at") is not None
                        elif status == "skipped":
                            self.progress.skipped += 1
                        else:
                            self.progress.failed += 1
                        if on_progress:
                            on_progress(self.progress)

                await asyncio.gather(*(one(t) for t in traces))
            await asyncio.to_thread(runs.finish, self.name, self.owner)
        finally:
            await runner.cleanup()
        return self.progress

    def _preload(self, traces: list[str]) -> None:
        """The selected traces' model calls and where their payloads are, in two queries for the whole run
        (one query per trace cost more than the replay itself)."""
        calls = self.selection.model_calls(traces, ("model.chat",))
        self._spans = {t: [s for s in calls.get(t, []) if s.get("airlock.payload.upstream_request")] for t in traces}
        digests = [
            d
            for spans in self._spans.values()
            for s in spans
            for d in (s["airlock.payload.upstream_request"], s.get("airlock.payload.response"))
            if d
        ]
        self._payload_set = self.selection.payloads(digests)

    def _payloads(self, digests: list[str]) -> dict[str, Any]:
        if self._payload_set is None:
            return {}
        return dict(self._payload_set.get_many(digests))

    async def replay_trace(self, session: aiohttp.ClientSession, trace_id: str) -> tuple[str, dict[str, Any]]:
        try:
            status, result = await self._replay_trace(session, trace_id)
        except Exception as e:  # one malformed trace fails alone, recorded as failed; the run goes on
            return "failed", {"trace_id": trace_id, "error": f"{type(e).__name__}: {e}"[:500]}
        if status == "done" and any(not t.get("ok") for t in result["turns"]):
            status = "failed"  # the candidate did not answer every turn: resume retries the trace
        return status, result

    async def _replay_trace(self, session: aiohttp.ClientSession, trace_id: str) -> tuple[str, dict[str, Any]]:
        all_spans = self._spans.get(trace_id, [])
        spans = [s for s in all_spans if replayed_span(s)]
        not_replayed = [
            f"{s['span_id']}: {s['status']} ({s.get('error_type') or 'no answer'})"
            for s in all_spans
            if not replayed_span(s)
        ]
        if not spans:
            return "skipped", {
                "reason": "no successful model call with recorded request bytes",
                "not_replayed": not_replayed,
            }
        wanted = [
            d for s in spans for d in (s["airlock.payload.upstream_request"], s.get("airlock.payload.response")) if d
        ]
        found = self._payloads(wanted)
        problems = [m for s in spans for m in check_span(s, found).missing]
        if problems:
            return "skipped", {"reason": "not replayable", "missing": problems}
        new_trace, turns, diverged_at = new_trace_id(), [], None
        for k, span in enumerate(spans):
            recorded_req = orjson.loads(found[span["airlock.payload.upstream_request"]])
            recorded_raw = found.get(span.get("airlock.payload.response") or "")
            recorded = parse_answer(recorded_raw) if isinstance(recorded_raw, bytes) else Answer()
            turn = await self._send(session, new_trace, span, recorded_req)
            candidate: Answer = turn.pop("_answer")
            turn.update(
                {
                    "recorded_finish": recorded.finish_reason,
                    "recorded_tool_calls": [c["name"] for c in recorded.tool_calls],
                    "recorded_input_tokens": span.get("gen_ai.usage.input_tokens"),
                    "recorded_output_tokens": span.get("gen_ai.usage.output_tokens"),
                    "recorded_latency_ms": span.get("duration_ms"),
                    "recorded_cost_usd": call_cost(
                        price_in_effect(
                            find_model(self.config, span.get("airlock.upstream"), span.get("airlock.upstream.model")),
                            _day(span.get("start_ns")),
                        ),
                        span.get("gen_ai.usage.input_tokens"),
                        span.get("gen_ai.usage.output_tokens"),
                        span.get("gen_ai.usage.cache_read.input_tokens"),
                        span.get("airlock.usage.reasoning_tokens"),
                    ),
                    "cost_usd": call_cost(  # the candidate's price on the day the original was served
                        price_in_effect(self._target_spec, _day(span.get("start_ns"))),
                        candidate.input_tokens,
                        candidate.output_tokens,
                    ),
                    "exact": turn.get("ok", False)
                    and candidate.content == recorded.content
                    and same_tool_calls(candidate, recorded),
                    "tool_agreement": same_tool_calls(candidate, recorded)
                    if recorded.tool_calls or candidate.tool_calls
                    else None,
                    "schema_valid": schema_verdict(recorded_req, candidate) if turn.get("ok") else None,
                }
            )
            both_answered = bool(recorded.content and candidate.content)
            if (
                self.config.replay.judge
                and turn.get("ok")
                and both_answered
                and not (recorded.tool_calls or candidate.tool_calls)
            ):
                turn["judge"] = await self._judge(session, new_trace, span, recorded_req, recorded, candidate)
            turns.append(turn)
            if (
                diverged_at is None
                and turn.get("ok")
                and (recorded.tool_calls or candidate.tool_calls)
                and not turn["tool_agreement"]
            ):
                diverged_at = k
                if self.on_divergence == "stop":
                    break
        return "done", {
            "trace_id": trace_id,
            "replay_trace_id": new_trace,
            "turns": turns,
            "diverged_at": diverged_at,
            "not_replayed": not_replayed,
        }

    async def _judge(
        self,
        session: aiohttp.ClientSession,
        trace: str,
        span: dict[str, Any],
        request: dict[str, Any],
        recorded: Answer,
        candidate: Answer,
    ) -> dict[str, Any]:
        """A pairwise preference from the configured local judge. The two answers are shown in an order
        fixed by the span id (not always recorded first), so position bias averages out over a run."""
        swap = int(span["span_id"][-1], 16) % 2 == 1
        first, second = (candidate, recorded) if swap else (recorded, candidate)
        question = next(
            (
                m.get("content")
                for m in reversed(request.get("messages") or [])
                if isinstance(m, dict) and m.get("role") == "user" and isinstance(m.get("content"), str)
            ),
            "",
        )
        body = {
            "model": self.config.replay.judge,
            "temperature": 0,
            "messages": [
                {
                    "role": "system",
                    "content": "You compare two answers to the same request. Prefer the one that is "
                    "more correct, complete and useful; say tie when neither is better. Answer in JSON.",
                },
                {
                    "role": "user",
                    "content": f"Request:\n{question}\n\nAnswer A:\n{first.content}\n\nAnswer B:\n{second.content}",
                },
            ],
            "response_format": {
                "type": "json_schema",
                "json_schema": {
                    "name": "preference",
                    "schema": {
                        "type": "object",
                        "required": ["preference", "rationale"],
                        "properties": {
                            "preference": {"type": "string", "enum": ["A", "B", "tie"]},
                            "rationale": {"type": "string"},
                        },
                    },
                },
            },
        }
        try:
            status, raw, _ = await self._post(session, body, trace, span, {"x-airlock-attr-replay_role": "judge"})
        except (aiohttp.ClientError, TimeoutError) as e:
            return {"preference": "error", "rationale": f"{type(e).__name__}: {e}"}
        if status != 200:
            return {"preference": "error", "rationale": raw[:200].decode("utf-8", "replace")}
        verdict = parse_answer(raw).content or ""
        try:
            doc = orjson.loads(verdict)
            pick, rationale = doc["preference"], str(doc.get("rationale", ""))
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return {"preference": "unparseable", "rationale": verdict[:300]}
        mapping = {"A": "candidate" if swap else "recorded", "B": "recorded" if swap else "candidate", "tie": "tie"}
        return {"preference": mapping.get(pick, "unparseable"), "rationale": rationale[:500]}

    async def _post(
        self,
        session: aiohttp.ClientSession,
        body: dict[str, Any],
        trace: str,
        span: dict[str, Any],
        extra: dict[str, str],
    ) -> tuple[int, bytes, str | None]:
        """One call through the in-process gateway, tagged as part of this replay and linked to its original."""
        headers = {
            "Authorization": f"Bearer {self.key}",
            "Content-Type": "application/json",
            "traceparent": format_traceparent(trace, new_span_id()),
            "x-airlock-replay-run": self.name,
            "x-airlock-replay-of": span["span_id"],
            **extra,
        }
        async with session.post(
            self._url + "/chat/completions",
            data=orjson.dumps(body),
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=300),
        ) as resp:
            return resp.status, await resp.read(), resp.headers.get("x-request-id")

    async def _send(
        self, session: aiohttp.ClientSession, trace: str, span: dict[str, Any], recorded_req: dict[str, Any]
    ) -> dict[str, Any]:
        body = dict(recorded_req)
        body["model"] = self.target
        dropped = [p for p in (self._target_spec.unsupported_params if self._target_spec else []) if p in body]
        for p in dropped:
            del body[p]
        start = time.perf_counter()
        turn: dict[str, Any] = {"span_id": span["span_id"], "dropped_params": dropped}
        try:
            turn["status"], raw, turn["replay_request_id"] = await self._post(
                session, body, trace, span, {"x-airlock-task": span.get("airlock.task") or ""}
            )
            turn["latency_ms"] = (time.perf_counter() - start) * 1000
        except (aiohttp.ClientError, TimeoutError) as e:
            turn.update(ok=False, error=f"{type(e).__name__}: {e}", _answer=Answer())
            return turn
        turn["ok"] = turn["status"] == 200
        answer = parse_answer(raw) if turn["ok"] else Answer()
        if not turn["ok"]:
            turn["error"] = raw[:300].decode("utf-8", "replace")
        turn.update(
            finish=answer.finish_reason,
            tool_calls=[c["name"] for c in answer.tool_calls],
            input_tokens=answer.input_tokens,
            output_tokens=answer.output_tokens,
            _answer=answer,
        )
        return turn


def _day(start_ns: int | None) -> date:
    return datetime.fromtimestamp(start_ns / 1e9, tz=UTC).date() if start_ns else date.today()


def _claim_is_stale(holder: str, claimed_at: datetime | None) -> bool:
    """Whether a claim is a dead runner's: on this host, when its process is gone; from another host,
    when it has not been renewed for STALE_CLAIM."""
    host, _, rest = holder.partition("/")
    pid_text = rest.partition("/")[0]
    if host == socket.gethostname() and pid_text.isdigit():
        try:
            os.kill(int(pid_text), 0)
        except ProcessLookupError:
            return True
        except PermissionError:  # alive, another user's
            return False
        return False
    return claimed_at is None or datetime.now(UTC) - claimed_at > STALE_CLAIM


def default_name() -> str:
    return time.strftime("replay-%Y%m%d-%H%M%S") + f"-{os.getpid() % 1000:03d}"
