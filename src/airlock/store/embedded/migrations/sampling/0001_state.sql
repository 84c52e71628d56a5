-- Tail sampling: how far the sampler has read each writer's span segments, the traces it is still
-- waiting on (constant-size aggregates), and its model (rates, sketches) as of its last pass.
CREATE TABLE sampling_cursor (
    writer      TEXT PRIMARY KEY,
    through_seq INTEGER NOT NULL,          -- every span segment of this writer up to here has been read
    decided_seq INTEGER NOT NULL           -- ... and every trace begun in them decided: compaction may merge
);
CREATE TABLE sampling_pending (
    trace_id TEXT PRIMARY KEY,
    state    TEXT NOT NULL                 -- JSON list: TraceState fields in order
);
CREATE TABLE sampling_passes (
    pass        INTEGER PRIMARY KEY,
    at_ns       INTEGER NOT NULL,
    spans_read  INTEGER NOT NULL,
    decided     INTEGER NOT NULL,
    kept        INTEGER NOT NULL,
    pending     INTEGER NOT NULL,
    skipped     INTEGER NOT NULL DEFAULT 0 -- segments merged before the sampler read them (not decided)
);
CREATE TABLE sampling_model (
    id    INTEGER PRIMARY KEY CHECK (id = 1),
    pass  INTEGER NOT NULL,
    model TEXT NOT NULL                    -- JSON: rates, sketches, recently decided traces
);
