-- Non-inference line items (vector DB queries, tool calls, human review, ...), idempotent by item id
-- within a tenant. request_sha tells a replayed POST (same body) from a conflicting one (another body).
CREATE TABLE ledger_items (
    tenant      TEXT NOT NULL,
    item_id     TEXT NOT NULL,
    category    TEXT NOT NULL,
    amount_usd  REAL NOT NULL,
    quantity    REAL,
    unit        TEXT,
    occurred_ns INTEGER NOT NULL,
    trace_id    TEXT,
    task        TEXT,
    feature     TEXT,
    user_id     TEXT,
    vendor      TEXT,
    description TEXT,
    attributes  TEXT,                  -- JSON object of free attributes
    request_sha TEXT NOT NULL,
    received_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP,
    PRIMARY KEY (tenant, item_id)
);
CREATE INDEX ledger_items_occurred ON ledger_items(occurred_ns);
