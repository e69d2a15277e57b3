-- Several instances judge one plant's readings in turn, and readings may
-- reach them out of order: each threshold state remembers the time of the
-- reading that last changed it, and older readings are not judged.
ALTER TABLE alert_states ADD COLUMN changed_at TIMESTAMPTZ;

-- Live events travel between instances by NOTIFY; their ids come from one
-- sequence, so a browser resuming on another instance names a known place.
CREATE SEQUENCE live_event_batches;

-- The instances sharing this database, each touching its row while it
-- runs: the leader takes over the broker session of one that stopped.
CREATE TABLE instances (
    id TEXT PRIMARY KEY,
    started_at TIMESTAMPTZ NOT NULL,
    seen_at TIMESTAMPTZ NOT NULL
);
