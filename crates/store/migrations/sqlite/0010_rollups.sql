-- Hourly rollups of each plant's readings: kept when raw readings are
-- pruned (PLANTOPS_RETENTION_DAYS), so long charts outlive them. Sums and
-- counts, not averages, so hours merge exactly into longer buckets.
CREATE TABLE reading_rollups (
    plant_id BLOB NOT NULL,
    hour INTEGER NOT NULL,
    n INTEGER NOT NULL,
    soil_moisture_min REAL, soil_moisture_max REAL,
    soil_moisture_sum REAL, soil_moisture_count INTEGER NOT NULL,
    temperature_min REAL, temperature_max REAL,
    temperature_sum REAL, temperature_count INTEGER NOT NULL,
    humidity_min REAL, humidity_max REAL,
    humidity_sum REAL, humidity_count INTEGER NOT NULL,
    light_level_min REAL, light_level_max REAL,
    light_level_sum REAL, light_level_count INTEGER NOT NULL,
    PRIMARY KEY (plant_id, hour)
);
