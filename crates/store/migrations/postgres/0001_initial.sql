CREATE TABLE plants (
    id UUID PRIMARY KEY,
    name TEXT NOT NULL,
    species TEXT,
    thresholds JSONB,
    alert_cooldown_minutes INTEGER NOT NULL DEFAULT 60,
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX plants_newest ON plants (created_at DESC, id);

CREATE TABLE devices (
    id UUID PRIMARY KEY,
    mac_address TEXT NOT NULL UNIQUE,
    mqtt_username TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    plant_id UUID REFERENCES plants (id) ON DELETE SET NULL,
    status TEXT NOT NULL,
    firmware_version TEXT,
    sensor_types JSONB,
    last_seen_at TIMESTAMPTZ,
    created_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX devices_newest ON devices (created_at DESC, id);
CREATE INDEX devices_plant ON devices (plant_id);

-- Readings outlive their device and plant: no foreign keys. The primary key
-- includes the time column, as a TimescaleDB hypertable requires.
CREATE TABLE readings (
    time TIMESTAMPTZ NOT NULL,
    device_id UUID NOT NULL,
    plant_id UUID,
    soil_moisture DOUBLE PRECISION,
    temperature DOUBLE PRECISION,
    humidity DOUBLE PRECISION,
    light_level DOUBLE PRECISION,
    PRIMARY KEY (device_id, time)
);
CREATE INDEX readings_plant_time ON readings (plant_id, time DESC);

-- With TimescaleDB installed (and preloaded) readings become a compressed
-- hypertable; on plain PostgreSQL the table above is used as it is.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb') THEN
        BEGIN
            CREATE EXTENSION IF NOT EXISTS timescaledb;
            PERFORM create_hypertable('readings', 'time',
                chunk_time_interval => INTERVAL '1 day', if_not_exists => TRUE, migrate_data => TRUE);
            EXECUTE 'ALTER TABLE readings SET (timescaledb.compress, '
                || 'timescaledb.compress_segmentby = ''device_id'', '
                || 'timescaledb.compress_orderby = ''time DESC'')';
            PERFORM add_compression_policy('readings', INTERVAL '7 days', if_not_exists => TRUE);
        EXCEPTION WHEN OTHERS THEN
            RAISE WARNING 'TimescaleDB present but not usable (%); readings stay a plain table', SQLERRM;
        END;
    END IF;
END
$$;
