-- A key is claimed (in_progress) before its first attempt runs and completed with the response after
-- it, and it expires: expires_at in seconds since the epoch, NULL for rows from before (kept forever,
-- as they were). Rows from before held a response, so they count as completed.
ALTER TABLE idempotency_keys ADD COLUMN state TEXT NOT NULL DEFAULT 'completed';
ALTER TABLE idempotency_keys ADD COLUMN expires_at REAL;
CREATE INDEX idempotency_keys_expiry ON idempotency_keys(expires_at)
