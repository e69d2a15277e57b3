-- The care journal: what was done to a plant, when and by whom.
CREATE TABLE care_events (
    id UUID PRIMARY KEY,
    plant_id UUID NOT NULL REFERENCES plants (id) ON DELETE CASCADE,
    kind TEXT NOT NULL,
    at TIMESTAMPTZ NOT NULL,
    amount DOUBLE PRECISION,
    unit TEXT,
    text TEXT,
    task TEXT,
    source TEXT NOT NULL,
    recorded_by TEXT,
    created_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX care_events_by_plant ON care_events (plant_id, at DESC);

-- The care schedule: one row per plant and task; its rule as JSON, and
-- what the reminders remember (a snooze, the due date last announced).
CREATE TABLE care_tasks (
    id UUID PRIMARY KEY,
    plant_id UUID NOT NULL REFERENCES plants (id) ON DELETE CASCADE,
    task TEXT NOT NULL,
    rule JSONB NOT NULL,
    snoozed_until TIMESTAMPTZ,
    announced_due_at TIMESTAMPTZ,
    created_at TIMESTAMPTZ NOT NULL,
    UNIQUE (plant_id, task)
);
