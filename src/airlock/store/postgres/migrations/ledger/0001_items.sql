-- Non-inference line items, idempotent by item id within a tenant (as the embedded ledger/0001_items).
-- request_sha tells a replayed POST (same body) from a conflicting one. seq keeps the order items were
-- stored in, which the embedded store returns items of one instant in.
CREATE TABLE ledger_items (
    tenant      TEXT COLLATE "C" NOT NULL,
    item_id     TEXT COLLATE "C" NOT NULL,
    category    TEXT NOT NULL,
    amount_usd  DOUBLE PRECISION NOT NULL,
    quantity    DOUBLE PRECISION,
    unit        TEXT,
    occurred_ns BIGINT NOT NULL,
    trace_id    TEXT,
    task        TEXT,
    feature     TEXT,
    user_id     TEXT,
    vendor      TEXT,
    description TEXT,
    attributes  TEXT,                  -- JSON object of free attributes, as the embedded store writes it
    request_sha TEXT NOT NULL,
    received_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    seq         BIGINT GENERATED ALWAYS AS IDENTITY,
    PRIMARY KEY (tenant, item_id)
);
CREATE INDEX ledger_items_occurred ON ledger_items (occurred_ns, seq);
