-- Notification channels beside the Discord webhook of the settings, and
-- their outbox: one row per alert and channel, delivered and retried on its
-- own, so one channel's outage delays only its own notices.
CREATE TABLE notification_channels (
    id BLOB PRIMARY KEY NOT NULL,
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    -- Severity::level of the least urgent alert the channel takes.
    min_severity_level INTEGER NOT NULL,
    -- The kind's fields as JSON, sealed under the installation's key.
    config_sealed TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    -- The last failed attempt's reason, cleared by a delivery.
    last_error TEXT,
    last_error_at INTEGER
);

CREATE TABLE channel_deliveries (
    channel_id BLOB NOT NULL REFERENCES notification_channels (id) ON DELETE CASCADE,
    alert_id BLOB NOT NULL REFERENCES alerts (id) ON DELETE CASCADE,
    delivery TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    PRIMARY KEY (channel_id, alert_id)
);
CREATE INDEX channel_deliveries_due ON channel_deliveries (channel_id, next_attempt_at)
    WHERE delivery = 'pending';
CREATE INDEX channel_deliveries_alert ON channel_deliveries (alert_id);
