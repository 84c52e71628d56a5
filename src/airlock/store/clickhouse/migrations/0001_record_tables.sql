-- The record's tables. Column names and types follow record/schema.py (SPAN_SCHEMA, HOP_SCHEMA) and
-- store/embedded/blobs.py (INDEX_SCHEMA) through store/clickhouse/schema.py's mapping; writer_id and seq
-- name the writer batch each row came from. Every table keeps a deduplication window so that a retried
-- insert of a batch (same insert_deduplication_token) adds nothing.

-- spans: partitioned by UTC day (dropping old days is a partition drop, retention a TTL), ordered by
-- tenant, hour and trace: every analysis filters by a time window and often by tenant (the primary index
-- prunes both: the hour is a monotonic function of start_ns), and a trace's spans of the hour sit together.
-- Lookups by id go through bloom-filter skipping indexes.
CREATE TABLE IF NOT EXISTS spans (
    `trace_id` String,
    `span_id` String,
    `parent_span_id` Nullable(String),
    `request_id` Nullable(String),
    `kind` LowCardinality(Nullable(String)),
    `name` Nullable(String),
    `start_ns` Int64,
    `end_ns` Nullable(Int64),
    `duration_ms` Nullable(Float64),
    `ttft_ms` Nullable(Float64),
    `status` LowCardinality(Nullable(String)),
    `http_status` Nullable(Int32),
    `error_type` LowCardinality(Nullable(String)),
    `error_message` Nullable(String),
    `airlock.node` LowCardinality(Nullable(String)),
    `airlock.node.region` LowCardinality(Nullable(String)),
    `airlock.tenant` LowCardinality(Nullable(String)),
    `airlock.user` Nullable(String),
    `airlock.session` Nullable(String),
    `airlock.task` Nullable(String),
    `airlock.agent_chain` Nullable(String),
    `airlock.intent` LowCardinality(Nullable(String)),
    `gen_ai.operation.name` LowCardinality(Nullable(String)),
    `gen_ai.request.model` LowCardinality(Nullable(String)),
    `gen_ai.response.model` LowCardinality(Nullable(String)),
    `gen_ai.response.id` Nullable(String),
    `gen_ai.response.finish_reasons` Array(String),
    `gen_ai.request.max_tokens` Nullable(Int64),
    `gen_ai.request.temperature` Nullable(Float64),
    `gen_ai.request.top_p` Nullable(Float64),
    `gen_ai.request.seed` Nullable(Int64),
    `airlock.request.stream` Nullable(Bool),
    `airlock.request.tool_count` Nullable(Int32),
    `airlock.response.tool_call_count` Nullable(Int32),
    `gen_ai.usage.input_tokens` Nullable(Int64),
    `gen_ai.usage.output_tokens` Nullable(Int64),
    `gen_ai.usage.cache_read.input_tokens` Nullable(Int64),
    `gen_ai.usage.cache_creation.input_tokens` Nullable(Int64),
    `airlock.usage.reasoning_tokens` Nullable(Int64),
    `airlock.usage.reported` Nullable(Bool),
    `airlock.local.input_tokens` Nullable(Int64),
    `airlock.local.output_tokens` Nullable(Int64),
    `airlock.local.tokenizer` LowCardinality(Nullable(String)),
    `airlock.script_mix` Nullable(String),
    `airlock.prompt.name` LowCardinality(Nullable(String)),
    `airlock.prompt.version` Nullable(String),
    `airlock.route` LowCardinality(Nullable(String)),
    `airlock.upstream` LowCardinality(Nullable(String)),
    `airlock.upstream.region` LowCardinality(Nullable(String)),
    `airlock.upstream.jurisdiction` LowCardinality(Nullable(String)),
    `airlock.attempts` Nullable(Int32),
    `airlock.payload.request` Nullable(String),
    `airlock.payload.upstream_request` Nullable(String),
    `airlock.payload.response` Nullable(String),
    `airlock.payload.request_bytes` Nullable(Int64),
    `airlock.payload.response_bytes` Nullable(Int64),
    `airlock.request.headers` Nullable(String),
    `airlock.decisions` Nullable(String),
    `airlock.sample.rate` Nullable(Float64),
    `airlock.sample.reason` LowCardinality(Nullable(String)),
    `airlock.replay.of` Nullable(String),
    `airlock.replay.run` Nullable(String),
    `attributes` Map(String, String),
    `airlock.schema_version` Nullable(Int16),
    `airlock.script` LowCardinality(Nullable(String)),
    `airlock.upstream.model` LowCardinality(Nullable(String)),
    `airlock.source` LowCardinality(Nullable(String)),
    `otel.span_kind` LowCardinality(Nullable(String)),
    `otel.scope.name` LowCardinality(Nullable(String)),
    writer_id LowCardinality(String),
    seq Int64,
    INDEX trace_id_bloom trace_id TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX span_id_bloom span_id TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX request_id_bloom request_id TYPE bloom_filter(0.01) GRANULARITY 1
)
ENGINE = MergeTree
PARTITION BY toDate(fromUnixTimestamp64Nano(start_ns, 'UTC'))
ORDER BY (`airlock.tenant`, intDiv(start_ns, 3600000000000), trace_id)
SETTINGS allow_nullable_key = 1, non_replicated_deduplication_window = 10000;

-- hops: read by trace (a trace's hops, the hops of a tenant's spans), partitioned like the spans.
CREATE TABLE IF NOT EXISTS hops (
    `trace_id` String,
    `span_id` String,
    `attempt` Nullable(Int16),
    `node` LowCardinality(Nullable(String)),
    `upstream` LowCardinality(Nullable(String)),
    `address` Nullable(String),
    `region` LowCardinality(Nullable(String)),
    `jurisdiction` LowCardinality(Nullable(String)),
    `deployment` LowCardinality(Nullable(String)),
    `start_ns` Int64,
    `end_ns` Nullable(Int64),
    `outcome` LowCardinality(Nullable(String)),
    `http_status` Nullable(Int32),
    `reason` Nullable(String),
    writer_id LowCardinality(String),
    seq Int64
)
ENGINE = MergeTree
PARTITION BY toDate(fromUnixTimestamp64Nano(start_ns, 'UTC'))
ORDER BY (trace_id, span_id)
SETTINGS non_replicated_deduplication_window = 10000;

-- blob_index: where each payload lies in the packs, read by digest. Not partitioned by time and kept
-- without TTL: a payload stored once is named by later spans for as long as they live.
CREATE TABLE IF NOT EXISTS blob_index (
    `digest` String,
    `pack` String,
    `frame_offset` Int64,
    `frame_length` Int64,
    `inner_offset` Int64,
    `length` Int64,
    writer_id LowCardinality(String),
    seq Int64
)
ENGINE = MergeTree
ORDER BY digest
SETTINGS non_replicated_deduplication_window = 10000;

-- batches: one row per writer batch whose blob index, hops and spans are all in (inserted last). A
-- batch's spans may span two days, hence two parts: only this row says the whole batch landed.
CREATE TABLE IF NOT EXISTS batches (
    writer_id String,
    seq Int64,
    spans UInt64,
    hops UInt64,
    blob_index UInt64,
    written_at DateTime DEFAULT now()
)
ENGINE = ReplacingMergeTree
ORDER BY (writer_id, seq)
SETTINGS non_replicated_deduplication_window = 10000;
