"""The record's columns: spans, hops. Names follow the OpenTelemetry GenAI conventions where one
exists (gen_ai.*); Airlock's own go under airlock.*.

Schema changes are append-only: a numbered entry in SPAN_MIGRATIONS adds columns, never renames or
drops one. Segments written before a migration simply lack the new columns; readers union by name,
so old segments read as NULL there and no rewrite is ever needed.
"""

from __future__ import annotations

import pyarrow as pa

_S, _I, _F, _B = pa.string(), pa.int64(), pa.float64(), pa.bool_()

# Kinds of span (the `kind` column): model.chat, model.completion, model.embedding and gateway.reject are
# written by the gateway; tool, email, retrieval, human_review, agent and otlp are for what other
# capabilities record. A span received over OTLP has airlock.source = 'otlp' and the GenAI kind its
# gen_ai.operation.name names, else kind 'otlp'; the gateway's own spans leave airlock.source empty.

# (number, description, columns added)
SPAN_MIGRATIONS: list[tuple[int, str, list[tuple[str, pa.DataType]]]] = [
    (
        1,
        "ids, times, status, principal, model, usage, payloads, decisions, free attributes",
        [
            ("trace_id", _S),
            ("span_id", _S),
            ("parent_span_id", _S),
            ("request_id", _S),
            ("kind", _S),
            ("name", _S),
            ("start_ns", _I),
            ("end_ns", _I),
            ("duration_ms", _F),
            ("ttft_ms", _F),
            ("status", _S),
            ("http_status", pa.int32()),
            ("error_type", _S),
            ("error_message", _S),
            # where it was served
            ("airlock.node", _S),
            ("airlock.node.region", _S),
            # the principal
            ("airlock.tenant", _S),
            ("airlock.user", _S),
            ("airlock.session", _S),
            ("airlock.task", _S),
            ("airlock.agent_chain", _S),
            ("airlock.intent", _S),
            # the model call (OTel GenAI)
            ("gen_ai.operation.name", _S),
            ("gen_ai.request.model", _S),
            ("gen_ai.response.model", _S),
            ("gen_ai.response.id", _S),
            ("gen_ai.response.finish_reasons", pa.list_(_S)),
            ("gen_ai.request.max_tokens", _I),
            ("gen_ai.request.temperature", _F),
            ("gen_ai.request.top_p", _F),
            ("gen_ai.request.seed", _I),
            ("airlock.request.stream", _B),
            ("airlock.request.tool_count", pa.int32()),
            ("airlock.response.tool_call_count", pa.int32()),
            # provider-reported usage, all parts
            ("gen_ai.usage.input_tokens", _I),
            ("gen_ai.usage.output_tokens", _I),
            ("gen_ai.usage.cache_read.input_tokens", _I),
            ("gen_ai.usage.cache_creation.input_tokens", _I),
            ("airlock.usage.reasoning_tokens", _I),
            ("airlock.usage.reported", _B),
            # local counts and the text's script mix (filled by the tokens capability)
            ("airlock.local.input_tokens", _I),
            ("airlock.local.output_tokens", _I),
            ("airlock.local.tokenizer", _S),
            ("airlock.script_mix", _S),
            # prompt served
            ("airlock.prompt.name", _S),
            ("airlock.prompt.version", _S),
            # routing outcome (every attempt is a hop row; these summarise the one that answered)
            ("airlock.route", _S),
            ("airlock.upstream", _S),
            ("airlock.upstream.region", _S),
            ("airlock.upstream.jurisdiction", _S),
            ("airlock.attempts", pa.int32()),
            # payloads, by sha256 in the blob store
            ("airlock.payload.request", _S),
            ("airlock.payload.upstream_request", _S),
            ("airlock.payload.response", _S),
            ("airlock.payload.request_bytes", _I),
            ("airlock.payload.response_bytes", _I),
            ("airlock.request.headers", _S),
            # decisions with reasons (route, policy, sampling), JSON list of {kind, verdict, reason}
            ("airlock.decisions", _S),
            ("airlock.sample.rate", _F),
            ("airlock.sample.reason", _S),
            # replay lineage
            ("airlock.replay.of", _S),
            ("airlock.replay.run", _S),
            # any number of free attributes, any cardinality
            ("attributes", pa.map_(_S, _S)),
            ("airlock.schema_version", pa.int16()),
        ],
    ),
]

HOP_MIGRATIONS: list[tuple[int, str, list[tuple[str, pa.DataType]]]] = [
    (
        1,
        "one row per attempt: where the request went and what happened",
        [
            ("trace_id", _S),
            ("span_id", _S),
            ("attempt", pa.int16()),
            ("node", _S),
            ("upstream", _S),
            ("address", _S),
            ("region", _S),
            ("jurisdiction", _S),
            ("deployment", _S),
            ("start_ns", _I),
            ("end_ns", _I),
            ("outcome", _S),
            ("http_status", pa.int32()),
            ("reason", _S),
        ],
    ),
]

SPAN_MIGRATIONS.append(
    (
        2,
        "the request's dominant script and the model name sent upstream, for drift per model and script (tokens)",
        [("airlock.script", _S), ("airlock.upstream.model", _S)],
    ),
)

SPAN_MIGRATIONS.append(
    (
        4,
        "spans received over OTLP: where a row came from, the OpenTelemetry span kind and instrumentation scope",
        [("airlock.source", _S), ("otel.span_kind", _S), ("otel.scope.name", _S)],
    ),
)

SCHEMA_VERSION = SPAN_MIGRATIONS[-1][0]


def _schema(migrations: list[tuple[int, str, list[tuple[str, pa.DataType]]]]) -> pa.Schema:
    fields = [pa.field(name, typ) for _, _, cols in migrations for name, typ in cols]
    return pa.schema(fields, metadata={b"airlock.schema_version": str(migrations[-1][0]).encode()})


SPAN_SCHEMA = _schema(SPAN_MIGRATIONS)
HOP_SCHEMA = _schema(HOP_MIGRATIONS)
PAYLOAD_COLUMNS = ("airlock.payload.request", "airlock.payload.upstream_request", "airlock.payload.response")
