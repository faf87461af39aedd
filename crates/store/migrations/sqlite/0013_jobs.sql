-- One queue for every background job (batches and fine-tuning jobs): what kind it is, whose,
-- where it stands, its priority, and which server holds it until when. A server works on a job
-- only while it holds it; a hold that is not renewed lapses, so a job of a server that died is
-- taken up by another (or by the same one when it starts again). The details of each kind stay
-- in its own table (`batches`, `fine_tuning_jobs`), written in the same transaction.
CREATE TABLE jobs (
    id          TEXT PRIMARY KEY NOT NULL,
    kind        TEXT NOT NULL,
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    status      TEXT NOT NULL,
    -- Higher runs first: 1 high, 0 normal, -1 low.
    priority    INTEGER NOT NULL DEFAULT 0,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    holder      TEXT,
    held_until  INTEGER
);

CREATE INDEX jobs_queue ON jobs(kind, status, priority, created_at);
CREATE INDEX jobs_tenant ON jobs(tenant_id, created_at);

INSERT INTO jobs (id, kind, tenant_id, status, created_at, updated_at)
    SELECT id, 'batch', tenant_id, status, created_at, created_at FROM batches;
INSERT INTO jobs (id, kind, tenant_id, status, created_at, updated_at)
    SELECT id, 'fine_tuning', tenant_id, status, created_at, created_at FROM fine_tuning_jobs;
