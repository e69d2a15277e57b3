-- Battery and radio signal of battery-powered devices, from the last
-- message that carried them; `battery_low` remembers that the low-battery
-- alert was raised, so it is raised once per discharge.
ALTER TABLE devices ADD COLUMN battery_percent DOUBLE PRECISION;
ALTER TABLE devices ADD COLUMN battery_volts DOUBLE PRECISION;
ALTER TABLE devices ADD COLUMN rssi_dbm DOUBLE PRECISION;
ALTER TABLE devices ADD COLUMN vitals_at TIMESTAMPTZ;
ALTER TABLE devices ADD COLUMN battery_low BOOLEAN NOT NULL DEFAULT FALSE;
