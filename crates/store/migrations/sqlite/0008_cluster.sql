-- Readings may be judged out of order (a redelivery after a restart): each
-- threshold state remembers the time of the reading that last changed it,
-- and older readings are not judged.
ALTER TABLE alert_states ADD COLUMN changed_at INTEGER;
