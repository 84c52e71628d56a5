-- Replay runs and their items, so that a killed replay resumes where it stopped.
CREATE TABLE replay_runs (
    name        TEXT PRIMARY KEY,
    target      TEXT NOT NULL,
    selection   TEXT NOT NULL,
    options     TEXT NOT NULL,
    created_at  TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP,
    finished_at TEXT
);
CREATE TABLE replay_items (
    run        TEXT NOT NULL REFERENCES replay_runs(name),
    trace_id   TEXT NOT NULL,
    status     TEXT NOT NULL,          -- pending | done | failed | skipped
    result     TEXT,                   -- JSON: per turn, what the candidate did against what was recorded
    updated_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP,
    PRIMARY KEY (run, trace_id)
);
