-- Metered usage: one row per tenant, key, model and UTC day, added to as calls settle.
CREATE TABLE usage (
    tenant TEXT NOT NULL,
    key_id TEXT NOT NULL,
    model TEXT NOT NULL,
    day TEXT NOT NULL,            -- YYYY-MM-DD, UTC
    requests INTEGER NOT NULL DEFAULT 0,
    prompt_tokens INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant, key_id, model, day)
);
CREATE INDEX usage_by_day ON usage (day);
