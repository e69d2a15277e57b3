-- What writing a plan cost: tokens as the provider reported them, and time.
ALTER TABLE care_plans ADD COLUMN input_tokens INTEGER;
ALTER TABLE care_plans ADD COLUMN output_tokens INTEGER;
ALTER TABLE care_plans ADD COLUMN duration_ms BIGINT;
