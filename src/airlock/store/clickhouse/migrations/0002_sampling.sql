-- Tail sampling's output on ClickHouse (store/clickhouse/sampling.py): the same rows as the embedded
-- store's decision and summary files (store/embedded/sampling.py's DECISION_SCHEMA and SUMMARY_SCHEMA),
-- plus `write_token`, the pass write a row came from: a retried pass that writes the same rows again is
-- dropped by the deduplication window, one that writes other rows replaces the pass's rows first.

-- sample_decisions: one row per decided trace and per late addition. Read by trace (each trace's weight,
-- the verdicts compaction and gc ask, `sample show`'s prefix lookups): ordered by trace, then pass. Not
-- partitioned by time and kept without TTL: a decision outlives its trace's spans, standing for it in
-- every estimate.
CREATE TABLE IF NOT EXISTS sample_decisions (
    `trace_id` String,
    `keep` Bool,
    `reason` LowCardinality(String),
    `probability` Float64,
    `adjusted_count` Float64,
    `key` String,
    `status` LowCardinality(String),
    `traces` Int64,
    `spans` Int64,
    `errors` Int64,
    `input_tokens` Int64,
    `output_tokens` Int64,
    `cost_usd` Float64,
    `start_ns` Int64,
    `duration_ms` Float64,
    `reserve` Bool,
    `early` LowCardinality(String),
    `pass` Int64,
    `write_token` String
)
ENGINE = MergeTree
ORDER BY (trace_id, pass)
SETTINGS non_replicated_deduplication_window = 10000;

-- sample_summaries: dropped traces per hour, key and status (few rows a pass), read whole.
CREATE TABLE IF NOT EXISTS sample_summaries (
    `hour_ns` Int64,
    `key` String,
    `status` LowCardinality(String),
    `traces` Int64,
    `spans` Int64,
    `errors` Int64,
    `input_tokens` Int64,
    `output_tokens` Int64,
    `cost_usd` Float64,
    `reserved` Int64,
    `pass` Int64,
    `write_token` String
)
ENGINE = MergeTree
ORDER BY (hour_ns, `key`, status, pass)
SETTINGS non_replicated_deduplication_window = 10000;
