-- Enclave's state on PostgreSQL: the same tables as the SQLite store (its migrations 0001 to
-- 0013), in PostgreSQL's types. Times are Unix seconds in BIGINT; hashes and session ids BYTEA.

CREATE TABLE tenants (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    created_at  BIGINT NOT NULL
);

CREATE TABLE users (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    name        TEXT NOT NULL UNIQUE,
    role        TEXT NOT NULL,
    clearance   TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    disabled_at BIGINT
);

CREATE INDEX users_tenant ON users(tenant_id);

CREATE TABLE api_keys (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    name        TEXT,
    role        TEXT NOT NULL,
    secret_hash BYTEA NOT NULL,
    created_at  BIGINT NOT NULL,
    revoked_at  BIGINT,
    clearance   TEXT NOT NULL DEFAULT '',
    user_id     TEXT REFERENCES users(id)
);

CREATE INDEX api_keys_tenant ON api_keys(tenant_id);

CREATE TABLE admin_events (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at          BIGINT NOT NULL,
    operation   TEXT NOT NULL,
    tenant      TEXT,
    key_id      TEXT,
    detail      TEXT NOT NULL,
    logged_at   BIGINT
);

CREATE INDEX admin_events_pending ON admin_events(logged_at) WHERE logged_at IS NULL;

CREATE TABLE usage (
    tenant            TEXT NOT NULL,
    key_id            TEXT NOT NULL,
    model             TEXT NOT NULL,
    -- YYYY-MM-DD, UTC
    day               TEXT NOT NULL,
    requests          BIGINT NOT NULL DEFAULT 0,
    prompt_tokens     BIGINT NOT NULL DEFAULT 0,
    completion_tokens BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant, key_id, model, day)
);

CREATE INDEX usage_by_day ON usage(day);

CREATE TABLE sessions (
    id          BYTEA PRIMARY KEY,
    user_id     TEXT NOT NULL REFERENCES users(id),
    issuer      TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    last_seen   BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    ended_at    BIGINT,
    end_reason  TEXT
);

CREATE INDEX sessions_user ON sessions(user_id);

CREATE TABLE conversations (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    owner       TEXT NOT NULL,
    title       TEXT NOT NULL,
    label       TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);

CREATE INDEX conversations_owner ON conversations(tenant_id, owner, updated_at);

CREATE TABLE conversation_messages (
    conversation_id TEXT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
    seq             BIGINT NOT NULL,
    role            TEXT NOT NULL,
    content         TEXT NOT NULL,
    label           TEXT NOT NULL,
    citations       TEXT,
    created_at      BIGINT NOT NULL,
    PRIMARY KEY (conversation_id, seq)
);

CREATE TABLE responses (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    key_id      TEXT NOT NULL,
    label       TEXT NOT NULL,
    context     TEXT NOT NULL,
    input       TEXT NOT NULL,
    body        TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);

CREATE INDEX responses_tenant ON responses(tenant_id, created_at);

CREATE TABLE files (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    key_id      TEXT NOT NULL,
    purpose     TEXT NOT NULL,
    filename    TEXT NOT NULL,
    bytes       BIGINT NOT NULL,
    lines       BIGINT NOT NULL,
    label       TEXT NOT NULL,
    sha256      TEXT NOT NULL,
    content     BYTEA NOT NULL,
    created_at  BIGINT NOT NULL
);

CREATE INDEX files_tenant ON files(tenant_id, created_at);

CREATE TABLE batches (
    id              TEXT PRIMARY KEY,
    tenant_id       TEXT NOT NULL REFERENCES tenants(id),
    owner           TEXT NOT NULL,
    endpoint        TEXT NOT NULL,
    input_file_id   TEXT NOT NULL,
    label           TEXT NOT NULL,
    status          TEXT NOT NULL,
    metadata        TEXT,
    total           BIGINT NOT NULL,
    output_file_id  TEXT,
    error_file_id   TEXT,
    error           TEXT,
    created_at      BIGINT NOT NULL,
    in_progress_at  BIGINT,
    finalizing_at   BIGINT,
    completed_at    BIGINT,
    failed_at       BIGINT,
    cancelling_at   BIGINT,
    cancelled_at    BIGINT,
    expires_at      BIGINT NOT NULL
);

CREATE INDEX batches_tenant ON batches(tenant_id, created_at);

CREATE TABLE batch_results (
    batch_id    TEXT NOT NULL REFERENCES batches(id),
    custom_id   TEXT NOT NULL,
    line        BIGINT NOT NULL,
    ok          BOOLEAN NOT NULL,
    label       TEXT NOT NULL,
    body        TEXT NOT NULL,
    PRIMARY KEY (batch_id, custom_id)
);

CREATE TABLE fine_tuning_jobs (
    id                TEXT PRIMARY KEY,
    tenant_id         TEXT NOT NULL REFERENCES tenants(id),
    status            TEXT NOT NULL,
    label             TEXT NOT NULL,
    fine_tuned_model  TEXT UNIQUE,
    created_at        BIGINT NOT NULL,
    body              TEXT NOT NULL
);

CREATE INDEX fine_tuning_jobs_tenant ON fine_tuning_jobs(tenant_id, created_at);

CREATE TABLE fine_tuning_events (
    job_id      TEXT NOT NULL REFERENCES fine_tuning_jobs(id),
    seq         BIGINT NOT NULL,
    created_at  BIGINT NOT NULL,
    body        TEXT NOT NULL,
    PRIMARY KEY (job_id, seq)
);

CREATE TABLE fine_tuning_checkpoints (
    id          TEXT PRIMARY KEY,
    job_id      TEXT NOT NULL REFERENCES fine_tuning_jobs(id),
    step        BIGINT NOT NULL,
    created_at  BIGINT NOT NULL,
    body        TEXT NOT NULL
);

CREATE INDEX fine_tuning_checkpoints_job ON fine_tuning_checkpoints(job_id, step);

CREATE TABLE jobs (
    id          TEXT PRIMARY KEY,
    kind        TEXT NOT NULL,
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    status      TEXT NOT NULL,
    -- Higher runs first: 1 high, 0 normal, -1 low.
    priority    BIGINT NOT NULL DEFAULT 0,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    holder      TEXT,
    held_until  BIGINT
);

CREATE INDEX jobs_queue ON jobs(kind, status, priority, created_at);
CREATE INDEX jobs_tenant ON jobs(tenant_id, created_at);
