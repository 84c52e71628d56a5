-- How far the OTLP exporter has sent each writer's spans on (see the embedded export/0001_cursors).
CREATE TABLE otlp_export_cursor (
    writer       TEXT COLLATE "C" PRIMARY KEY,
    seq_done     BIGINT NOT NULL,
    partial      TEXT,
    partial_rows BIGINT NOT NULL DEFAULT 0,
    updated_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);
