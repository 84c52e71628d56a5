-- Gateway worker processes that have run against this data directory, and their segment writers.
CREATE TABLE writers (
    writer_id   TEXT PRIMARY KEY,
    node        TEXT NOT NULL,
    region      TEXT NOT NULL,
    pid         INTEGER NOT NULL,
    started_at  TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP,
    stopped_at  TEXT
);
