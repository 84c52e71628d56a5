-- How far the OTLP exporter has sent each writer's spans on: rows sent, counted along the writer's
-- segments in order (compaction keeps that order), so a restart resends nothing.
CREATE TABLE otlp_export_cursor (
    writer     TEXT PRIMARY KEY,
    rows_sent  INTEGER NOT NULL,
    updated_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP
);
