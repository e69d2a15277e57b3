-- The time (Unix milliseconds) of the newest reading of a plant that its
-- thresholds were judged against: the evaluator's catch-up judges what was
-- stored after it (readings committed by an instance that stopped before
-- judging them). Everything stored before this migration was judged by the
-- version that stored it.
ALTER TABLE plants ADD COLUMN readings_judged_through INTEGER;
UPDATE plants SET readings_judged_through =
    (SELECT max(time) FROM readings WHERE readings.plant_id = plants.id);
