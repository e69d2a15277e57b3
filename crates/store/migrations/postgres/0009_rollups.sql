-- Hourly rollups of each plant's readings: kept when raw readings are
-- pruned (PLANTOPS_RETENTION_DAYS), so long charts outlive them. Sums and
-- counts, not averages, so hours merge exactly into longer buckets.
CREATE TABLE reading_rollups (
    plant_id UUID NOT NULL,
    hour TIMESTAMPTZ NOT NULL,
    n BIGINT NOT NULL,
    soil_moisture_min DOUBLE PRECISION, soil_moisture_max DOUBLE PRECISION,
    soil_moisture_sum DOUBLE PRECISION, soil_moisture_count BIGINT NOT NULL,
    temperature_min DOUBLE PRECISION, temperature_max DOUBLE PRECISION,
    temperature_sum DOUBLE PRECISION, temperature_count BIGINT NOT NULL,
    humidity_min DOUBLE PRECISION, humidity_max DOUBLE PRECISION,
    humidity_sum DOUBLE PRECISION, humidity_count BIGINT NOT NULL,
    light_level_min DOUBLE PRECISION, light_level_max DOUBLE PRECISION,
    light_level_sum DOUBLE PRECISION, light_level_count BIGINT NOT NULL,
    PRIMARY KEY (plant_id, hour)
);
