-- Readings may be judged out of order (a redelivery after a restart): each
-- threshold state remembers the time of the reading that last changed it,
-- and older readings are not judged.
ALTER TABLE alert_states ADD COLUMN changed_at INTEGER;

-- With an external broker the instance touches its row while it runs (the
-- same bookkeeping PostgreSQL's several instances use).
CREATE TABLE instances (
    id TEXT PRIMARY KEY,
    started_at INTEGER NOT NULL,
    seen_at INTEGER NOT NULL
);
