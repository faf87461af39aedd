-- Fine-tuning jobs (`POST /v1/fine_tuning/jobs`): a job's searchable facts in columns and the
-- rest (request, owner, hyperparameters, lineage, results) as one JSON document; its events and
-- checkpoints in order. A succeeded job's model is served from its adapter at every start.
CREATE TABLE fine_tuning_jobs (
    id                TEXT PRIMARY KEY NOT NULL,
    tenant_id         TEXT NOT NULL REFERENCES tenants(id),
    status            TEXT NOT NULL,
    -- The banner of the job's label: the join of its training and validation files' labels.
    label             TEXT NOT NULL,
    fine_tuned_model  TEXT UNIQUE,
    created_at        INTEGER NOT NULL,
    body              TEXT NOT NULL
);

CREATE INDEX fine_tuning_jobs_tenant ON fine_tuning_jobs(tenant_id, created_at);

CREATE TABLE fine_tuning_events (
    job_id      TEXT NOT NULL REFERENCES fine_tuning_jobs(id),
    seq         INTEGER NOT NULL,
    created_at  INTEGER NOT NULL,
    body        TEXT NOT NULL,
    PRIMARY KEY (job_id, seq)
);

CREATE TABLE fine_tuning_checkpoints (
    id          TEXT PRIMARY KEY NOT NULL,
    job_id      TEXT NOT NULL REFERENCES fine_tuning_jobs(id),
    step        INTEGER NOT NULL,
    created_at  INTEGER NOT NULL,
    body        TEXT NOT NULL
);

CREATE INDEX fine_tuning_checkpoints_job ON fine_tuning_checkpoints(job_id, step);
