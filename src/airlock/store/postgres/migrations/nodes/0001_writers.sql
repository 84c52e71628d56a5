-- Gateway worker processes that have run against this store, and their segment writers.
CREATE TABLE writers (
    writer_id   TEXT COLLATE "C" PRIMARY KEY,
    node        TEXT NOT NULL,
    region      TEXT NOT NULL,
    pid         BIGINT NOT NULL,
    started_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    stopped_at  TIMESTAMPTZ
);
