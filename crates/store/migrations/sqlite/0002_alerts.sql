-- Alerts double as the notification outbox: `delivery` is pending until
-- the notifier has sent (or given up on) them.
CREATE TABLE alerts (
    id BLOB PRIMARY KEY NOT NULL,
    plant_id BLOB,
    device_id BLOB,
    kind TEXT NOT NULL,
    metric TEXT,
    value REAL,
    threshold REAL,
    direction TEXT,
    message TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    delivery TEXT NOT NULL,
    acknowledged_at INTEGER,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL
);
CREATE INDEX alerts_newest ON alerts (created_at DESC, id);
CREATE INDEX alerts_plant ON alerts (plant_id, created_at DESC);
CREATE INDEX alerts_due ON alerts (next_attempt_at) WHERE delivery = 'pending';

CREATE TABLE alert_states (
    plant_id BLOB NOT NULL REFERENCES plants (id) ON DELETE CASCADE,
    metric TEXT NOT NULL,
    breached TEXT,
    notified INTEGER NOT NULL,
    last_notified_at INTEGER,
    PRIMARY KEY (plant_id, metric)
);
