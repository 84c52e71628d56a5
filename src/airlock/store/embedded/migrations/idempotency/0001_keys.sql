-- Idempotency keys for write surfaces (ledger items, tool calls, outbox) that arrive more than once.
CREATE TABLE idempotency_keys (
    scope       TEXT NOT NULL,
    key         TEXT NOT NULL,
    request_sha TEXT NOT NULL,
    response    BLOB,
    created_at  TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP,
    PRIMARY KEY (scope, key)
);
