-- People who sign in by certificate (and, later, by an identity provider). `name` is the identity
-- their sign-in maps to: a UPN, an e-mail address or a subject name, unique across tenants.
CREATE TABLE users (
    id          TEXT PRIMARY KEY NOT NULL,
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    name        TEXT NOT NULL UNIQUE,
    role        TEXT NOT NULL,
    clearance   TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    disabled_at INTEGER
);

CREATE INDEX users_tenant ON users(tenant_id);
