-- Alerts double as the notification outbox: `delivery` is pending until
-- the notifier has sent (or given up on) them.
CREATE TABLE alerts (
    id UUID PRIMARY KEY,
    plant_id UUID,
    device_id UUID,
    kind TEXT NOT NULL,
    metric TEXT,
    value DOUBLE PRECISION,
    threshold DOUBLE PRECISION,
    direction TEXT,
    message TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    delivery TEXT NOT NULL,
    acknowledged_at TIMESTAMPTZ,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX alerts_newest ON alerts (created_at DESC, id);
CREATE INDEX alerts_plant ON alerts (plant_id, created_at DESC);
CREATE INDEX alerts_due ON alerts (next_attempt_at) WHERE delivery = 'pending';

CREATE TABLE alert_states (
    plant_id UUID NOT NULL REFERENCES plants (id) ON DELETE CASCADE,
    metric TEXT NOT NULL,
    breached TEXT,
    notified BOOLEAN NOT NULL,
    last_notified_at TIMESTAMPTZ,
    PRIMARY KEY (plant_id, metric)
);
