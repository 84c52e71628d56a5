-- Replay runs and their items, so that a killed replay resumes where it stopped, and which runner holds
-- a run (host/pid/token) and since when, so that two runners never run one name at once.
CREATE TABLE replay_runs (
    name        TEXT COLLATE "C" PRIMARY KEY,
    target      TEXT NOT NULL,
    selection   TEXT NOT NULL,         -- JSON
    options     TEXT NOT NULL,         -- JSON
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    finished_at TIMESTAMPTZ,
    claimed_by  TEXT,
    claimed_at  TIMESTAMPTZ
);
CREATE TABLE replay_items (
    run        TEXT COLLATE "C" NOT NULL REFERENCES replay_runs(name),
    trace_id   TEXT COLLATE "C" NOT NULL,
    status     TEXT NOT NULL,          -- pending | done | failed | skipped
    result     TEXT,                   -- JSON: per turn, what the candidate did against what was recorded
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (run, trace_id)
);
