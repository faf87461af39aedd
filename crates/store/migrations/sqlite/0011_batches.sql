-- Batches (`POST /v1/batches`): one row per batch, and one row per line answered. A line's
-- result is keyed by (batch, custom_id), so after a crash a line already answered is never
-- answered again, and every custom_id appears once in the output or error file.
CREATE TABLE batches (
    id              TEXT PRIMARY KEY NOT NULL,
    tenant_id       TEXT NOT NULL REFERENCES tenants(id),
    -- JSON: who the lines run as (key id, tenant, role, clearance, user).
    owner           TEXT NOT NULL,
    endpoint        TEXT NOT NULL,
    input_file_id   TEXT NOT NULL,
    label           TEXT NOT NULL,
    status          TEXT NOT NULL,
    metadata        TEXT,
    total           INTEGER NOT NULL,
    output_file_id  TEXT,
    error_file_id   TEXT,
    error           TEXT,
    created_at      INTEGER NOT NULL,
    in_progress_at  INTEGER,
    finalizing_at   INTEGER,
    completed_at    INTEGER,
    failed_at       INTEGER,
    cancelling_at   INTEGER,
    cancelled_at    INTEGER,
    expires_at      INTEGER NOT NULL
);

CREATE INDEX batches_tenant ON batches(tenant_id, created_at);

CREATE TABLE batch_results (
    batch_id    TEXT NOT NULL REFERENCES batches(id),
    custom_id   TEXT NOT NULL,
    line        INTEGER NOT NULL,
    ok          INTEGER NOT NULL,
    label       TEXT NOT NULL,
    body        TEXT NOT NULL,
    PRIMARY KEY (batch_id, custom_id)
);
