-- Care plans written by the LLM advisor, kept with their history.
CREATE TABLE care_plans (
    id UUID PRIMARY KEY,
    plant_id UUID NOT NULL REFERENCES plants (id) ON DELETE CASCADE,
    plan JSONB NOT NULL,
    provider TEXT NOT NULL,
    model TEXT NOT NULL,
    reason TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX care_plans_by_plant ON care_plans (plant_id, created_at DESC);
