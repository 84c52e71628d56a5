-- Which runner holds a replay run (host/pid/token), and when it last claimed it or saved an item, so
-- that two runners never run one name at once and a dead runner's claim can be taken over.
ALTER TABLE replay_runs ADD COLUMN claimed_by TEXT;
ALTER TABLE replay_runs ADD COLUMN claimed_at TEXT
