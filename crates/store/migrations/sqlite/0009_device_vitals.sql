-- Battery and radio signal of battery-powered devices, from the last
-- message that carried them; `battery_low` remembers that the low-battery
-- alert was raised, so it is raised once per discharge.
ALTER TABLE devices ADD COLUMN battery_percent REAL;
ALTER TABLE devices ADD COLUMN battery_volts REAL;
ALTER TABLE devices ADD COLUMN rssi_dbm REAL;
ALTER TABLE devices ADD COLUMN vitals_at INTEGER;
ALTER TABLE devices ADD COLUMN battery_low INTEGER NOT NULL DEFAULT 0;
