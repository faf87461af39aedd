-- What a succeeded fine-tuning job made (its adapter, its checkpoints' adapters), kept in the
-- store so every server sharing it can serve the model, not only the one that trained it.
CREATE TABLE fine_tuning_artifacts (
    job_id  TEXT NOT NULL REFERENCES fine_tuning_jobs(id),
    name    TEXT NOT NULL,
    bytes   BYTEA NOT NULL,
    PRIMARY KEY (job_id, name)
);
