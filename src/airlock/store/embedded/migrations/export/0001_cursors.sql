-- How far the OTLP exporter has sent each writer's spans on: every segment of the writer up to seq_done,
-- and, of the segment being sent (by file name, which never changes once written), partial_rows rows.
CREATE TABLE otlp_export_cursor (
    writer       TEXT PRIMARY KEY,
    seq_done     INTEGER NOT NULL,
    partial      TEXT,
    partial_rows INTEGER NOT NULL DEFAULT 0,
    updated_at   TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP
);
