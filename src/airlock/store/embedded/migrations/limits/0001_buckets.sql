-- Rate buckets (GCRA): each key's theoretical arrival time, the moment its bucket is full again, in
-- whole microseconds since the epoch. A row whose tat_us has passed is a full bucket and may be swept.
CREATE TABLE rate_buckets (
    key    TEXT PRIMARY KEY,
    tat_us INTEGER NOT NULL
);
CREATE INDEX rate_buckets_tat ON rate_buckets(tat_us);
-- Budget counters over fixed windows aligned to the epoch (86400 s: a UTC day): the total added to a
-- key in the window starting at window_start. Rows of ended windows may be swept.
CREATE TABLE budget_counters (
    key          TEXT NOT NULL,
    window_s     REAL NOT NULL,
    window_start REAL NOT NULL,
    total        REAL NOT NULL,
    PRIMARY KEY (key, window_s, window_start)
);
CREATE INDEX budget_counters_end ON budget_counters(window_start + window_s)
