-- A plant's own low-battery limit (percent; 0: never); NULL follows
-- PLANTOPS_LOW_BATTERY_PERCENT.
ALTER TABLE plants ADD COLUMN low_battery_percent INTEGER;
