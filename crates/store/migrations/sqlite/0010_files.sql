-- Files (`POST /v1/files`) for batches and fine-tuning, per tenant, at the label the uploader
-- declared joined with every marking found in them. The bytes are kept here, so a backup of
-- the database is a backup of the files.
CREATE TABLE files (
    id          TEXT PRIMARY KEY NOT NULL,
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    key_id      TEXT NOT NULL,
    purpose     TEXT NOT NULL,
    filename    TEXT NOT NULL,
    bytes       INTEGER NOT NULL,
    lines       INTEGER NOT NULL,
    label       TEXT NOT NULL,
    sha256      TEXT NOT NULL,
    content     BLOB NOT NULL,
    created_at  INTEGER NOT NULL
);

CREATE INDEX files_tenant ON files(tenant_id, created_at);
