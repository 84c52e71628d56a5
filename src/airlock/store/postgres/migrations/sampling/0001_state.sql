-- Tail sampling: how far the sampler has read each writer's span segments, the traces it is still
-- waiting on, its model as of its last pass, and the pass log (see the embedded sampling/0001_state).
CREATE TABLE sampling_cursor (
    writer      TEXT COLLATE "C" PRIMARY KEY,
    through_seq BIGINT NOT NULL,           -- every span segment of this writer up to here has been read
    decided_seq BIGINT NOT NULL            -- ... and every trace begun in them decided: compaction may merge
);
CREATE TABLE sampling_pending (
    trace_id TEXT COLLATE "C" PRIMARY KEY,
    state    TEXT NOT NULL                 -- JSON list: TraceState fields in order
);
CREATE TABLE sampling_passes (
    pass        BIGINT PRIMARY KEY,
    at_ns       BIGINT NOT NULL,
    spans_read  BIGINT NOT NULL,
    decided     BIGINT NOT NULL,
    kept        BIGINT NOT NULL,
    pending     BIGINT NOT NULL,
    skipped     BIGINT NOT NULL DEFAULT 0  -- segments merged before the sampler read them (not decided)
);
CREATE TABLE sampling_model (
    id    INTEGER PRIMARY KEY CHECK (id = 1),
    pass  BIGINT NOT NULL,
    model TEXT NOT NULL                    -- JSON: rates, sketches, recently decided traces
);
