-- Times are Unix milliseconds; ids are 16-byte UUIDs.
CREATE TABLE plants (
    id BLOB PRIMARY KEY NOT NULL,
    name TEXT NOT NULL,
    species TEXT,
    thresholds TEXT,
    alert_cooldown_minutes INTEGER NOT NULL DEFAULT 60,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE INDEX plants_newest ON plants (created_at DESC, id);

CREATE TABLE devices (
    id BLOB PRIMARY KEY NOT NULL,
    mac_address TEXT NOT NULL UNIQUE,
    mqtt_username TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    plant_id BLOB REFERENCES plants (id) ON DELETE SET NULL,
    status TEXT NOT NULL,
    firmware_version TEXT,
    sensor_types TEXT,
    last_seen_at INTEGER,
    created_at INTEGER NOT NULL
);
CREATE INDEX devices_newest ON devices (created_at DESC, id);
CREATE INDEX devices_plant ON devices (plant_id);

-- Readings outlive their device and plant: no foreign keys.
CREATE TABLE readings (
    device_id BLOB NOT NULL,
    time INTEGER NOT NULL,
    plant_id BLOB,
    soil_moisture REAL,
    temperature REAL,
    humidity REAL,
    light_level REAL,
    PRIMARY KEY (device_id, time)
) WITHOUT ROWID;
CREATE INDEX readings_plant_time ON readings (plant_id, time);
